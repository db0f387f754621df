"""Passivation in the shard core: a memory budget, an aggregate store behind it, and a store that
survives restarts. Uses real SQLite files (the store is a local file by design), no Kafka."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from actors.aggregate_store import PartitionStore
from actors.outcomes import Accepted
from actors.shard_core import CHECKPOINT_KEY, Entry, ShardCore, SnapshotCodec
from tests.unit.test_shard_core import (
    PARTITIONS,
    REGISTRY,
    START,
    Add,
    Record,
    Tally,
    TallyState,
    decide_and_commit,
    ids_in,
)

OWNED = (0, 1)


def stores(directory: Path | None) -> dict[int, PartitionStore]:
    return {p: PartitionStore(directory / f"p{p}.sqlite3" if directory else None) for p in OWNED}


def core(budget: int | None, directory: Path | None = None) -> ShardCore:
    return ShardCore(Tally(), REGISTRY, OWNED, PARTITIONS, "tally-events", stores(directory), budget)


def tally_ids(n: int) -> list[str]:
    return ids_in(0, n // 2) + ids_in(1, n - n // 2)


def snapshot(c: ShardCore, topic: list[Record]) -> None:
    """Write every due snapshot to `topic` (the snapshot topic) as the Kafka side would."""
    for p in c.snapshots_due(every=1, force=True):
        for key, value in c.snapshot_records(p):
            topic.append(Record(p, sum(r.p == p for r in topic), key, value))
        c.snapshotted(p, sum(r.p == p for r in topic))


def outcome_summary(outcomes: list[object]) -> list[tuple[str, object]]:
    return [
        ("accepted", [e.envelope.version for e in o.events]) if isinstance(o, Accepted) else ("rejected", o.code)  # type: ignore[attr-defined]
        for o in outcomes
    ]


@pytest.mark.parametrize(("seed", "budget"), [(seed, 1 + seed % 6) for seed in range(25)])
def test_a_small_budget_decides_exactly_as_an_unbounded_core(seed: int, budget: int) -> None:
    rng = random.Random(seed)
    ids = tally_ids(12)
    bounded, unbounded = core(budget), core(None)
    for _ in range(60):
        batch = [
            Add(tally_id=rng.choice(ids), n=rng.randint(0, 4), command_id=f"c{rng.randint(0, 80)}")
            for _ in range(rng.randint(1, 4))
        ]
        assert outcome_summary(decide_and_commit(bounded, *batch)) == outcome_summary(
            decide_and_commit(unbounded, *batch)
        )
        assert len(bounded.entries) <= budget
    assert bounded.all_entries() == unbounded.all_entries()
    for tid in ids:
        assert bounded.state(tid) == unbounded.state(tid)


def test_an_evicted_aggregate_keeps_its_deadline_and_its_recent_command_ids() -> None:
    c = core(budget=1)
    a, b = ids_in(0, 2)
    first = Add(tally_id=a, n=1, command_id="first")
    decide_and_commit(c, first)
    decide_and_commit(c, Add(tally_id=b, n=1))
    c.flush_spills()
    assert list(c.entries) == [b] and c.stored() == 1, "a was evicted to its store"
    (again,) = decide_and_commit(c, first)
    assert isinstance(again, Accepted) and again.duplicate, "its recent command ids came back with it"
    assert c.state(a)[0].total == 1
    due = c.due_commands(START + timedelta(minutes=2))
    assert sorted(cmd.aggregate_id for cmd in due) == sorted([a, b])
    closed = decide_and_commit(c, *due)
    assert all(isinstance(o, Accepted) and not o.duplicate for o in closed)
    assert c.state(a)[0].closed and c.state(b)[0].closed


def test_a_restart_reads_only_the_tails_and_skips_what_the_store_already_holds(tmp_path: Path) -> None:
    events: list[Record] = []
    topic: list[Record] = []
    ids = tally_ids(8)
    c = core(budget=2, directory=tmp_path)
    decide_and_commit(c, *[Add(tally_id=t, n=1) for t in ids], log=events)
    snapshot(c, topic)
    covered = dict(c.next_offset)
    decide_and_commit(c, *[Add(tally_id=t, n=2) for t in ids], log=events)  # past the checkpoint
    expected = c.all_entries()  # flushes the evicted ones: the store is ahead of the checkpoint
    c.close()

    fresh = core(budget=2, directory=tmp_path)
    assert fresh.snapshot_starts() == {0: sum(r.p == 0 for r in topic), 1: sum(r.p == 1 for r in topic)}
    checkpoints, restored = fresh.restore_snapshots([])  # the topic holds nothing past the store
    assert (checkpoints, restored) == (covered, 0)
    for record in [r for r in events if r.at >= checkpoints[r.p]]:
        fresh.replay(record)
    assert fresh.skipped > 0, "evicted aggregates were stored past the checkpoint"
    assert fresh.all_entries() == expected
    assert {t for p in OWNED for t in fresh.dirty[p]} == set(ids), "the next snapshot carries them all"


def test_a_dropped_snapshot_empties_the_store_so_the_partition_replays(tmp_path: Path) -> None:
    events: list[Record] = []
    topic: list[Record] = []
    c = core(budget=1, directory=tmp_path)
    (a,) = ids_in(0, 1)
    decide_and_commit(c, Add(tally_id=a, n=3), log=events)
    snapshot(c, topic)
    c.close()
    blank = SnapshotCodec(Tally.state_type).encode(Entry(TallyState(), 0))  # what `choreo snapshots drop` writes
    dropped = b'{"next_offset": 0, "at": 0, "dropped": true}'
    offset = len([r for r in topic if r.p == 0])
    fresh = core(budget=1, directory=tmp_path)
    checkpoints, _ = fresh.restore_snapshots(
        [Record(0, offset, a.encode(), blank), Record(0, offset + 1, CHECKPOINT_KEY, dropped)]
    )
    assert checkpoints.get(0) == 0 and fresh.state(a) == (TallyState(), 0)
    for record in events:
        fresh.replay(record)
    assert fresh.skipped == 0, "nothing of the dropped snapshot is trusted"
    assert fresh.state(a)[0].total == 3


class TallyStateV2(TallyState):
    note: str = ""


class TallyV2(Tally):
    """The same aggregate after its state type changed (a new field)."""

    state_type = TallyStateV2

    def initial(self) -> TallyStateV2:
        return TallyStateV2()


def test_snapshots_of_another_state_schema_are_replayed_and_then_superseded(tmp_path: Path) -> None:
    events: list[Record] = []
    topic: list[Record] = []
    old = core(budget=None)
    a, b = ids_in(0, 1) + ids_in(1, 1)
    decide_and_commit(old, Add(tally_id=a, n=2), Add(tally_id=b, n=3), log=events)
    snapshot(old, topic)

    upgraded = ShardCore(TallyV2(), REGISTRY, OWNED, PARTITIONS, "tally-events", stores(tmp_path / "node-1"))
    assert upgraded.restore_snapshots(topic) == ({}, 0), "old-schema snapshots are ignored: replay from 0"
    for record in events:
        upgraded.replay(record)
    assert upgraded.state(a) == (TallyStateV2(total=2, opened=START), 1)
    written: list[Record] = list(topic)
    snapshot(upgraded, written)
    assert all(SnapshotCodec.checkpoint_supersedes(r.v or b"") for r in written[len(topic) :] if r.k == CHECKPOINT_KEY)

    new_node = ShardCore(TallyV2(), REGISTRY, OWNED, PARTITIONS, "tally-events", stores(tmp_path / "node-2"))
    checkpoints, restored = new_node.restore_snapshots(written)
    assert checkpoints == upgraded.next_offset and restored == 2, "the complete snapshot supersedes the old ones"
    assert new_node.all_entries() == upgraded.all_entries()


def test_an_aggregate_store_of_another_state_schema_is_forgotten(tmp_path: Path) -> None:
    old = core(budget=1, directory=tmp_path)
    decide_and_commit(old, *[Add(tally_id=t, n=1) for t in tally_ids(4)])
    snapshot(old, [])
    old.close()
    assert core(budget=1, directory=tmp_path).stored() == 4
    upgraded = ShardCore(TallyV2(), REGISTRY, OWNED, PARTITIONS, "tally-events", stores(tmp_path), 1)
    assert upgraded.stored() == 0 and upgraded.snapshot_starts() == {0: 0, 1: 0}


def test_a_store_file_of_an_older_layout_or_corrupt_is_rebuilt(tmp_path: Path) -> None:
    import sqlite3

    old = tmp_path / "p0.sqlite3"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE applied (id INTEGER PRIMARY KEY, snapshot_next INTEGER NOT NULL, checkpoint INTEGER)")
    (tmp_path / "p1.sqlite3").write_bytes(b"not a database" * 100)
    c = ShardCore(Tally(), REGISTRY, OWNED, PARTITIONS, "tally-events", stores(tmp_path), 2)
    assert c.snapshot_starts() == {0: 0, 1: 0}
    decide_and_commit(c, *[Add(tally_id=t, n=1) for t in tally_ids(6)])
    assert c.all_entries().keys() == set(tally_ids(6))

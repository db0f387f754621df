"""A partition moving between shard cores (live rescaling), and the partition map that routes to
them. Pure: real SQLite stores, no Kafka."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import pytest

from actors.aggregate_store import PartitionStore
from actors.dedup import DedupStore, Recorded
from actors.outcomes import Rejected
from actors.shard_core import ShardCore
from events.log.owners import PartitionOwners
from tests.unit.test_passivation import outcome_summary, snapshot
from tests.unit.test_shard_core import PARTITIONS, REGISTRY, START, Add, Record, Tally, decide_and_commit, ids_in


def summary(outcomes: list[object]) -> list[object]:
    """Outcomes to compare: a duplicate answered from an aggregate's recent ids (after a move, as
    after a restart) carries no events; the shard's durable dedup index answers those with them."""
    return [
        ("duplicate",) if getattr(o, "duplicate", False) else s
        for o, s in zip(outcomes, outcome_summary(outcomes), strict=True)
    ]


def core(owned: tuple[int, ...], directory: Path, budget: int | None) -> ShardCore:
    stores = {p: PartitionStore(directory / f"p{p}.sqlite3") for p in owned}
    return ShardCore(Tally(), REGISTRY, owned, PARTITIONS, "tally-events", stores, budget)


def move(
    p: int, source: ShardCore, dest: ShardCore, directory: Path, events: list[Record], topic: list[Record]
) -> None:
    """What a move does around the cores: snapshot and release at the source, rehydrate a core of
    the partition alone from the snapshot topic (`topic`) past its store and the event tail, and
    absorb it at the destination."""
    snapshot(source, topic)
    source.release(p)
    arriving = core((p,), directory, dest.max_in_memory)
    start = arriving.snapshot_starts()[p]
    checkpoints, _ = arriving.restore_snapshots([r for r in topic if r.p == p][start:])
    for record in events:
        if record.p == p and record.at >= checkpoints.get(p, 0):
            arriving.replay(record)
    dest.absorb(arriving)


@pytest.mark.parametrize(("seed", "budget"), [(seed, [None, 1, 3][seed % 3]) for seed in range(9)])
def test_a_moved_partition_decides_exactly_as_if_it_had_never_moved(
    tmp_path: Path, seed: int, budget: int | None
) -> None:
    rng = random.Random(seed)
    ids = [t for p in range(PARTITIONS) for t in ids_in(p, 3)]
    unmoved = core(tuple(range(PARTITIONS)), tmp_path / "unmoved", None)
    a, b = core((0, 1), tmp_path / "a", budget), core((2, 3), tmp_path / "b", budget)
    owner = {0: a, 1: a, 2: b, 3: b}
    events: list[Record] = []
    topic: list[Record] = []
    for step in range(80):
        if step in (20, 50):  # partition 1 goes to b, then comes back to a
            src, dst = (a, b) if step == 20 else (b, a)
            move(1, src, dst, tmp_path / ("b" if dst is b else "a"), events, topic)
            owner[1] = dst
        chosen = [rng.choice(ids) for _ in range(rng.randint(1, 4))]
        # Command ids repeat per aggregate (retries), so every owner sees all of an id's retries.
        batch = [Add(tally_id=t, n=rng.randint(0, 4), command_id=f"{t}-c{rng.randint(0, 12)}") for t in chosen]
        for cmd in batch:
            p = unmoved.partition_of(cmd.aggregate_id)
            expected = decide_and_commit(unmoved, cmd)
            assert summary(decide_and_commit(owner[p], cmd, log=events)) == summary(expected)
    for t in ids:
        assert owner[unmoved.partition_of(t)].state(t) == unmoved.state(t)


def test_the_old_owner_refuses_a_moved_partition_and_its_deadlines_move_with_it(tmp_path: Path) -> None:
    a, b = core((0, 1), tmp_path / "a", 1), core((2, 3), tmp_path / "b", 1)
    events: list[Record] = []
    moving, staying = ids_in(1, 2), ids_in(0, 1)
    decide_and_commit(a, *[Add(tally_id=t, n=1) for t in moving + staying], log=events)
    move(1, a, b, tmp_path / "b", events, [])
    (refused,) = decide_and_commit(a, Add(tally_id=moving[0], n=1))
    assert isinstance(refused, Rejected) and refused.code == "wrong_shard"
    later = START + timedelta(minutes=2)
    assert [c.aggregate_id for c in a.due_commands(later)] == staying
    assert sorted(c.aggregate_id for c in b.due_commands(later)) == sorted(moving)
    assert sorted(a.owned) == [0] and sorted(b.owned) == [1, 2, 3]
    assert b.state(moving[0])[1] == 1 and b.next_offset[1] == max(r.at for r in events if r.p == 1) + 1


def test_dedup_indexes_move_with_their_partition(tmp_path: Path) -> None:
    a, b = DedupStore(tmp_path, [0, 1], 3600), DedupStore(tmp_path, [2], 3600)
    a.add(1, [("cmd-1", Recorded(at=time.time(), code="nope", reason="no"))], next_offset=1)
    a.release(1)
    arriving = DedupStore(tmp_path, [1], 3600)  # the same node: it reads the file the old owner closed
    b.absorb(arriving)
    assert b.starts() == {2: 0, 1: 1}
    assert b.lookup(1, ["cmd-1"])["cmd-1"].code == "nope"
    assert list(a.starts()) == [0]


def test_the_partition_map_routes_round_robin_and_moves_one_partition_at_a_time() -> None:
    two = PartitionOwners.round_robin(2, 6)
    assert two.owners == (0, 1, 0, 1, 0, 1) and two.owned(1) == [1, 3, 5]
    step = two.moved(3, 3)
    assert (step.shards, step.owners, step.epoch) == (4, (0, 1, 0, 3, 0, 1), 1)
    assert PartitionOwners.decode(step.encode()) == step
    assert PartitionOwners.round_robin(4, 6).owned(3) == [3]

"""The pure shard core, without Kafka: aggregate slots, replay, dedup, deadlines and snapshots.
Records "read from the log" are plain objects with the four methods the core reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from actors import DomainError
from actors.outcomes import Accepted, Rejected
from actors.shard_core import CHECKPOINT_KEY, RECENT_COMMANDS, Entry, ShardCore, SnapshotCodec
from events import Command, DomainModel, Event, Messages, Registry, StoredEvent
from events.base import Envelope
from events.log.topics import partition_for

PARTITIONS = 4
START = datetime(2026, 1, 1, tzinfo=UTC)


class Add(Command):
    target = "tally"
    tally_id: str
    n: int

    @property
    def aggregate_id(self) -> str:
        return self.tally_id


class Close(Command):
    target = "tally"
    tally_id: str

    @property
    def aggregate_id(self) -> str:
        return self.tally_id


class Added(Event):
    aggregate_type = "tally"
    n: int


class Closed(Event):
    aggregate_type = "tally"


class TallyState(DomainModel):
    total: int = 0
    opened: datetime | None = None
    closed: bool = False


class Tally:
    """Adds up to 10; closes itself a minute after the first add."""

    aggregate_type = "tally"
    state_type = TallyState

    def initial(self) -> TallyState:
        return TallyState()

    def decide(self, state: TallyState, command: Command) -> list[Event]:
        if state.closed:
            raise DomainError("closed", "the tally is closed")
        if isinstance(command, Close):
            return [Closed()]
        assert isinstance(command, Add)
        if command.n == 13:
            raise RuntimeError("unlucky")  # a handler bug
        if state.total + command.n > 10:
            raise DomainError("over_limit", f"{state.total} + {command.n} is over 10")
        return [Added(n=command.n)]

    def evolve(self, state: TallyState, event: Event) -> TallyState:
        if isinstance(event, Closed):
            return state.model_copy(update={"closed": True})
        assert isinstance(event, Added)
        return state.model_copy(update={"total": state.total + event.n, "opened": state.opened or START})

    def due_at(self, state: TallyState) -> datetime | None:
        return None if state.closed or state.opened is None else state.opened + timedelta(minutes=1)

    def expire(self, aggregate_id: str) -> Command:
        return Close(tally_id=aggregate_id, command_id=f"close:{aggregate_id}")


REGISTRY = Registry.of(Messages(events=(Added, Closed), commands=(Add, Close)))


@dataclass
class Record:
    """A record as the consumer hands it over."""

    p: int
    at: int
    k: bytes | None
    v: bytes | None

    def partition(self) -> int | None:
        return self.p

    def offset(self) -> int | None:
        return self.at

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def ids_in(partition: int, n: int) -> list[str]:
    found = [f"t{i}" for i in range(1000) if partition_for(f"t{i}", PARTITIONS) == partition]
    return found[:n]


def core(owned: tuple[int, ...] = (0, 1)) -> ShardCore:
    return ShardCore(Tally(), REGISTRY, owned, PARTITIONS, "tally-events")


def decide_and_commit(c: ShardCore, *commands: Command, log: list[Record] | None = None) -> list[object]:
    """What the Kafka side does around one transaction, with `log` as the event topic."""
    pending: dict[str, Entry] = {}
    outcomes: list[object] = []
    appended: list[tuple[str, list[StoredEvent]]] = []
    for cmd in commands:
        outcome, staged = c.decide(cmd, pending)
        if outcome is not None:
            outcomes.append(outcome)
            continue
        stored = []
        for env, payload in staged:
            p = c.partition_of(env.aggregate_id)
            offset = len(log) if log is not None else 0
            if log is not None:
                log.append(Record(p, offset, env.aggregate_id.encode(), REGISTRY.encode_event(env, payload)))
            stored.append(StoredEvent(envelope=env, payload=payload, topic="tally-events", partition=p, offset=offset))
        appended.append((cmd.command_id, stored))
        outcomes.append(None)
    accepted = iter(c.commit(pending, appended))
    return [o if o is not None else next(accepted) for o in outcomes]


def test_decide_stages_events_and_commits_only_when_told() -> None:
    c = core()
    (tid,) = ids_in(0, 1)
    pending: dict[str, Entry] = {}
    outcome, staged = c.decide(Add(tally_id=tid, n=3), pending)
    assert outcome is None
    assert [(env.version, env.aggregate_id, payload) for env, payload in staged] == [(1, tid, Added(n=3))]
    assert c.state(tid) == (TallyState(), 0), "nothing moves before the commit"
    c.commit(pending, [])
    state, version = c.state(tid)
    assert (state.total, version) == (3, 1)


def test_rejections_carry_the_domain_code_and_handler_bugs_do_not_raise() -> None:
    c = core()
    (tid,) = ids_in(0, 1)
    over, bug = decide_and_commit(c, Add(tally_id=tid, n=11), Add(tally_id=tid, n=13))
    assert isinstance(over, Rejected) and over.code == "over_limit" and "over 10" in over.reason
    assert isinstance(bug, Rejected) and bug.code == "handler_error" and "unlucky" in bug.reason


def test_commands_of_partitions_the_core_does_not_own_or_of_another_transaction_are_refused() -> None:
    c = core(owned=(0,))
    (other,) = ids_in(1, 1)
    (mine,) = ids_in(0, 1)
    outcome, _ = c.decide(Add(tally_id=other, n=1), {})
    assert isinstance(outcome, Rejected) and outcome.code == "wrong_shard"
    outcome, _ = c.decide(Add(tally_id=mine, n=1), {}, partition=2)
    assert isinstance(outcome, Rejected) and outcome.code == "misrouted"


def test_a_retried_command_returns_its_original_events_without_deciding_again() -> None:
    c = core()
    (tid,) = ids_in(1, 1)
    cmd = Add(tally_id=tid, n=2)
    (first,) = decide_and_commit(c, cmd)
    (again,) = decide_and_commit(c, cmd)
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert again.duplicate and again.events == first.events
    assert c.state(tid)[0].total == 2


def test_dedup_survives_a_replay_through_the_aggregates_recent_command_ids() -> None:
    log: list[Record] = []
    c = core()
    (tid,) = ids_in(0, 1)
    cmd = Add(tally_id=tid, n=4)
    decide_and_commit(c, cmd, log=log)
    fresh = core()
    for record in log:
        fresh.replay(record)
    fresh.seen.clear()  # as if the in-memory outcomes had been evicted
    outcome, staged = fresh.decide(cmd, {})
    assert isinstance(outcome, Accepted) and outcome.duplicate and staged == []
    assert fresh.state(tid)[0].total == 4


def test_recent_command_ids_are_bounded() -> None:
    c = core()
    (tid,) = ids_in(0, 1)
    for i in range(RECENT_COMMANDS + 4):
        decide_and_commit(c, Add(tally_id=tid, n=0, command_id=f"c{i}"))
    assert c.entries[tid].recent == tuple(f"c{i}" for i in range(4, RECENT_COMMANDS + 4))


def test_replay_folds_the_log_and_tracks_the_next_offset() -> None:
    log: list[Record] = []
    c = core()
    a, b = ids_in(0, 1) + ids_in(1, 1)
    decide_and_commit(c, Add(tally_id=a, n=1), Add(tally_id=b, n=2), Add(tally_id=a, n=3), log=log)
    fresh = core()
    for record in log:
        fresh.replay(record)
    assert {k: (e.state.total, e.version) for k, e in fresh.entries.items()} == {a: (4, 2), b: (2, 1)}
    assert fresh.next_offset == {0: 3, 1: 2}, "one past each partition's last event"


def test_an_undecodable_event_or_a_version_gap_breaks_only_its_partition() -> None:
    log: list[Record] = []
    c = core()
    a, b = ids_in(0, 1) + ids_in(1, 1)
    decide_and_commit(c, Add(tally_id=a, n=1), Add(tally_id=b, n=1), Add(tally_id=b, n=1), log=log)
    gap = [r for r in log if r.p == 1][1:]  # partition 1 without b's first event
    fresh = core()
    fresh.replay(Record(0, 99, a.encode(), b"not json"))
    for record in gap:
        fresh.replay(record)
    assert "undecodable event at offset 99" in fresh.broken[0]
    assert "version gap" in fresh.broken[1] and "the log has v2" in fresh.broken[1]
    outcome, _ = fresh.decide(Add(tally_id=a, n=1), {})
    assert isinstance(outcome, Rejected) and outcome.code == "partition_unavailable"
    assert fresh.snapshots_due(every=1, force=True) == [], "a broken partition never gets a checkpoint"


def test_deadlines_fire_once_and_not_for_aggregates_that_ended() -> None:
    c = core()
    a, b = ids_in(0, 2)
    decide_and_commit(c, Add(tally_id=a, n=1), Add(tally_id=b, n=1))
    decide_and_commit(c, Close(tally_id=b))
    assert c.due_commands(START + timedelta(seconds=59)) == []
    due = c.due_commands(START + timedelta(minutes=2))
    assert [(type(cmd), cmd.aggregate_id, cmd.command_id) for cmd in due] == [(Close, a, f"close:{a}")]
    assert c.due_commands(START + timedelta(minutes=3)) == [], "popped: a deadline fires once"


def test_a_rescheduled_deadline_replaces_the_old_one() -> None:
    c = core()
    (tid,) = ids_in(0, 1)
    decide_and_commit(c, Add(tally_id=tid, n=1))
    c.restore_snapshots(
        [
            Record(
                0, 0, tid.encode(), c.snapshots.encode(Entry(TallyState(total=1, opened=START + timedelta(hours=1)), 1))
            ),
            Record(0, 1, CHECKPOINT_KEY, SnapshotCodec.checkpoint(5)),
        ]
    )
    assert c.due_commands(START + timedelta(minutes=2)) == [], "the stale heap entry is skipped"
    assert len(c.due_commands(START + timedelta(hours=2))) == 1


def test_snapshots_round_trip_through_their_records() -> None:
    log: list[Record] = []
    c = core()
    a, b = ids_in(0, 1) + ids_in(1, 1)
    decide_and_commit(c, Add(tally_id=a, n=5), Add(tally_id=b, n=6), Close(tally_id=b), log=log)
    assert c.snapshots_due(every=3) == [], "partition 0 has 1 event, partition 1 has 2"
    assert c.snapshots_due(every=2) == [1]
    records = []
    for p in c.snapshots_due(every=1):
        mine = [Record(p, i, k, v) for i, (k, v) in enumerate(c.snapshot_records(p))]
        records += mine
        c.snapshotted(p, len(mine))
    assert c.snapshots_due(every=1, force=True) == [], "nothing changed since"
    fresh = core()
    checkpoints, restored = fresh.restore_snapshots(records)
    assert restored == 2 and checkpoints == c.next_offset == {0: 1, 1: 3}
    assert fresh.entries == {}, "restored into the store, loaded on demand"
    assert fresh.all_entries() == c.all_entries()


def test_a_corrupt_or_unfinished_snapshot_makes_its_partition_replay_from_zero() -> None:
    c = core()
    a, b = ids_in(0, 1) + ids_in(1, 1)
    decide_and_commit(c, Add(tally_id=a, n=5), Add(tally_id=b, n=6))
    good = [Record(0, i, k, v) for i, (k, v) in enumerate(c.snapshot_records(0))]
    unfinished = [Record(1, 0, k, v) for k, v in c.snapshot_records(1)[:-1]]  # no checkpoint
    corrupt = [Record(0, 9, a.encode(), b"{garbage")]
    fresh = core()
    assert fresh.restore_snapshots(good + unfinished) == ({0: c.next_offset[0]}, 1)
    assert set(fresh.all_entries()) == {a}
    fresh = core()
    assert fresh.restore_snapshots(good + corrupt) == ({}, 0)
    assert fresh.all_entries() == {}


def test_reset_forgets_everything() -> None:
    c = core()
    (tid,) = ids_in(0, 1)
    decide_and_commit(c, Add(tally_id=tid, n=1))
    c.reset()
    assert (c.entries, dict(c.seen), c.deadlines, c.next_offset) == ({}, {}, [], {0: 0, 1: 0})


def test_staged_envelopes_carry_saga_and_causation_ids() -> None:
    c = core()
    (tid,) = ids_in(0, 1)
    _, staged = c.decide(Add(tally_id=tid, n=1, command_id="cmd-1", correlation_id="saga-7"), {})
    env: Envelope = staged[0][0]
    assert (env.correlation_id, env.causation_id, env.aggregate_type) == ("saga-7", "cmd-1", "tally")
    _, staged = c.decide(Add(tally_id=tid, n=1, command_id="cmd-2"), {})
    assert staged[0][0].correlation_id == tid, "a command without a saga id starts one named after its aggregate"

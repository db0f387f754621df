"""The pure core of a shard: the aggregate slots of its partitions, command dedup, the deadline
heap and the snapshot codec. It decides commands and folds events, but performs no I/O: the
Kafka side (`actors.shard`) feeds it the records it reads and tells it what a transaction
committed. Unit-tested without Kafka."""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import create_model

from actors.aggregate import Aggregate, DomainError, HasDeadlines, benign_rejections
from actors.outcomes import Accepted, Outcome, Rejected
from events.base import Command, DomainModel, Envelope, Event, StoredEvent, new_id, utc_now
from events.log.records import LogRecord
from events.log.topics import partition_for
from events.registry import DecodeError, Registry

log = logging.getLogger("choreo.shard")

CHECKPOINT_KEY = b"__checkpoint__"
"""Key of the record that closes a partition's snapshot: the event offset the snapshot covers."""
RECENT_COMMANDS = 16
"""Command ids remembered per aggregate (and kept in its snapshot) for idempotent redelivery."""
SEEN_CAPACITY = 100_000
"""Recent command outcomes kept in memory so a retried command returns its original events."""

Staged = list[tuple[Envelope, Event]]
"""The events one accepted command appends, in order, not yet committed."""


@dataclass
class Entry:
    """One aggregate's slot: its state, version and the ids of the last commands it applied."""

    state: DomainModel
    version: int
    recent: tuple[str, ...] = ()


class SnapshotCodec:
    """One aggregate's snapshot as JSON, written and parsed by pydantic's Rust core."""

    def __init__(self, state_type: type[DomainModel]) -> None:
        self.model = create_model(
            f"{state_type.__name__}Snapshot",
            state=(state_type, ...),
            version=(int, ...),
            recent=(tuple[str, ...], ()),
        )

    def encode(self, entry: Entry) -> bytes:
        return self.model(state=entry.state, version=entry.version, recent=entry.recent).model_dump_json().encode()

    def decode(self, value: bytes) -> Entry:
        snap: Any = self.model.model_validate_json(value)
        return Entry(snap.state, snap.version, snap.recent)

    @staticmethod
    def checkpoint(next_offset: int) -> bytes:
        return json.dumps({"next_offset": next_offset, "at": time.time()}).encode()

    @staticmethod
    def checkpoint_offset(value: bytes) -> int:
        return int(json.loads(value)["next_offset"])


class ShardCore:
    """Single writer for the aggregates of `owned` partitions (of `partitions` in the topic).
    Not thread-safe: one caller at a time."""

    def __init__(
        self, aggregate: Aggregate[Any], registry: Registry, owned: Iterable[int], partitions: int, events_topic: str
    ) -> None:
        self.aggregate = aggregate
        self.expiring = aggregate if isinstance(aggregate, HasDeadlines) else None
        self.benign = benign_rejections(aggregate)
        self.registry = registry
        self.owned = set(owned)
        self.partitions = partitions
        self.events_topic = events_topic
        self.snapshots = SnapshotCodec(aggregate.state_type)
        self.entries: dict[str, Entry] = {}
        self.seen: OrderedDict[str, list[StoredEvent]] = OrderedDict()
        self.deadlines: list[tuple[datetime, str]] = []
        self.scheduled: dict[str, datetime] = {}
        self.next_offset: dict[int, int] = dict.fromkeys(self.owned, 0)
        self.since_checkpoint: dict[int, int] = dict.fromkeys(self.owned, 0)
        self.dirty: dict[int, set[str]] = {p: set() for p in self.owned}
        self.broken: dict[int, str] = {}
        """Partitions whose event log could not be replayed (undecodable event, version gap), with
        why: the shard refuses to decide on them rather than serve state it knows is incomplete."""

    # ---- rehydration -------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything, before rehydrating afresh."""
        self.entries.clear()
        self.seen.clear()
        self.broken.clear()
        self.deadlines.clear()
        self.scheduled.clear()
        for p in self.owned:
            self.next_offset[p] = 0
            self.since_checkpoint[p] = 0
            self.dirty[p].clear()

    def restore_snapshots(self, records: Iterable[LogRecord]) -> tuple[dict[int, int], int]:
        """Load the latest snapshot of each aggregate from the snapshot topic's records. Returns,
        per partition, the event offset its snapshot covers (replay starts there), and how many
        aggregates were restored. A partition with a corrupt or unfinished snapshot replays from 0."""
        checkpoints: dict[int, int] = {}
        pending: dict[int, dict[str, Entry]] = {p: {} for p in self.owned}
        corrupt: set[int] = set()
        for record in records:
            p = record.partition() or 0
            if p in corrupt or p not in self.owned:
                continue
            try:
                if record.key() == CHECKPOINT_KEY:
                    checkpoints[p] = self.snapshots.checkpoint_offset(record.value() or b"")
                else:
                    pending[p][(record.key() or b"").decode()] = self.snapshots.decode(record.value() or b"")
            except (ValueError, KeyError, TypeError) as exc:
                # Case 2 of the runbook: a corrupt snapshot is ignored and the partition replays.
                log.warning("snapshot partition %d is corrupt (%s); replaying from 0", p, exc)
                corrupt.add(p)
        restored = 0
        for p in self.owned:
            if p in corrupt or p not in checkpoints:
                checkpoints.pop(p, None)
                continue
            for agg_id, entry in pending[p].items():
                self._set_entry(agg_id, entry)
            restored += len(pending[p])
        for p, offset in checkpoints.items():
            self.next_offset[p] = offset
        return checkpoints, restored

    def replay(self, record: LogRecord) -> None:
        """Fold one event read from the log into its aggregate. An undecodable event or a version
        gap breaks the partition: nothing more is folded or decided there."""
        p, offset = record.partition() or 0, record.offset() or 0
        self.next_offset[p] = offset + 1
        if p in self.broken:
            return
        try:
            stored = self.registry.decode_event(record.value(), self.events_topic, p, offset)
        except DecodeError as exc:
            self.break_partition(p, f"undecodable event at offset {offset}: {exc}")
            return
        env = stored.envelope
        entry = self.entries.get(env.aggregate_id) or Entry(self.aggregate.initial(), 0)
        if env.version != entry.version + 1:
            have, read = entry.version, env.version
            self.break_partition(
                p, f"version gap at offset {offset}: {env.aggregate_id} is at v{have}, the log has v{read}"
            )
            return
        recent = entry.recent
        if not recent or recent[-1] != env.causation_id:
            recent = (*recent, env.causation_id)[-RECENT_COMMANDS:]
        self._set_entry(
            env.aggregate_id,
            Entry(self.aggregate.evolve(entry.state, stored.payload), env.version, recent),
        )
        self._remember(env.causation_id, stored)
        self.since_checkpoint[p] += 1
        self.dirty[p].add(env.aggregate_id)

    def break_partition(self, p: int, why: str) -> None:
        """Refuse partition `p` from now on (until a restart rehydrates it afresh), saying why."""
        self.broken[p] = why
        log.error(
            "shard refuses partition %d of %s until its log is repaired (an upcaster, or the runbook): %s",
            p, self.events_topic, why,
        )  # fmt: skip

    def _set_entry(self, agg_id: str, entry: Entry) -> None:
        self.entries[agg_id] = entry
        if self.expiring is None:
            return
        due = self.expiring.due_at(entry.state)
        if due is None:
            self.scheduled.pop(agg_id, None)
        elif self.scheduled.get(agg_id) != due:
            self.scheduled[agg_id] = due
            heapq.heappush(self.deadlines, (due, agg_id))

    def _remember(self, command_id: str, stored: StoredEvent) -> None:
        events = self.seen.get(command_id)
        if events is None:
            self.seen[command_id] = [stored]
            if len(self.seen) > SEEN_CAPACITY:
                self.seen.popitem(last=False)
        else:
            events.append(stored)

    # ---- deciding ----------------------------------------------------------------

    def partition_of(self, aggregate_id: str) -> int:
        return partition_for(aggregate_id, self.partitions)

    def decide(
        self, cmd: Command, pending: dict[str, Entry], partition: int | None = None
    ) -> tuple[Outcome | None, Staged]:
        """Decide `cmd` against the aggregate's state, with `pending` holding this transaction's
        uncommitted slots. Returns an outcome when there is nothing to append (a rejection, a
        duplicate), else None and the staged events (the new slot goes into `pending`).
        `partition`: the partition the transaction writes; a command of another one is misrouted."""
        cid = cmd.command_id
        agg_id = cmd.aggregate_id
        p = self.partition_of(agg_id)
        if partition is not None and p != partition:
            # Checked before deciding: a decision stages state that would then never commit.
            return Rejected(cid, "misrouted", f"{agg_id} is not in partition {partition}"), []
        if cid in self.seen:
            return Accepted(cid, list(self.seen[cid]), duplicate=True), []
        if p not in self.owned:
            return Rejected(cid, "wrong_shard", f"{agg_id} belongs to partition {p}"), []
        if p in self.broken:
            reason = f"partition {p} of {self.events_topic} is not served: {self.broken[p]}"
            return Rejected(cid, "partition_unavailable", reason), []
        entry = pending.get(agg_id) or self.entries.get(agg_id) or Entry(self.aggregate.initial(), 0)
        if cid in entry.recent:
            return Accepted(cid, [], duplicate=True), []
        try:
            events = self.aggregate.decide(entry.state, cmd)
            state, version = entry.state, entry.version
            staged: Staged = []
            now = utc_now()
            for ev in events:
                version += 1
                state = self.aggregate.evolve(state, ev)
                env = Envelope(
                    event_id=new_id(),
                    event_type=ev.type_name(),
                    aggregate_type=self.aggregate.aggregate_type,
                    aggregate_id=agg_id,
                    version=version,
                    occurred_at=now,
                    correlation_id=cmd.correlation_id or agg_id,
                    causation_id=cid,
                    schema_version=ev.schema_version,
                )
                staged.append((env, ev))
        except DomainError as exc:
            return Rejected(cid, exc.code, exc.message), []
        except Exception as exc:  # a handler bug must not take the shard down
            log.exception("handler error on %s", cmd.type_name())
            return Rejected(cid, "handler_error", f"{type(exc).__name__}: {exc}"), []
        pending[agg_id] = Entry(state, version, (*entry.recent, cid)[-RECENT_COMMANDS:])
        return None, staged

    def commit(self, pending: dict[str, Entry], appended: Iterable[tuple[str, list[StoredEvent]]]) -> list[Accepted]:
        """A transaction committed: its slots become current, and each command's events (now with
        their log positions) are remembered for retries. Returns the commands' outcomes."""
        for agg_id, entry in pending.items():
            self._set_entry(agg_id, entry)
        accepted = []
        for cid, stored in appended:
            for event in stored:
                self.next_offset[event.partition] = max(self.next_offset[event.partition], event.offset + 1)
                self.since_checkpoint[event.partition] += 1
                self.dirty[event.partition].add(event.envelope.aggregate_id)
            self.seen[cid] = stored
            if len(self.seen) > SEEN_CAPACITY:
                self.seen.popitem(last=False)
            accepted.append(Accepted(cid, stored))
        return accepted

    # ---- deadlines ---------------------------------------------------------------

    def due_commands(self, now: datetime | None = None) -> list[Command]:
        """Commands for aggregates whose deadline has passed (e.g. ExpireOrder)."""
        if self.expiring is None or not self.deadlines:
            return []
        now = now or utc_now()
        due: list[Command] = []
        while self.deadlines and self.deadlines[0][0] <= now:
            at, agg_id = heapq.heappop(self.deadlines)
            if self.scheduled.get(agg_id) == at:
                del self.scheduled[agg_id]
                due.append(self.expiring.expire(agg_id))
        return due

    # ---- snapshots ---------------------------------------------------------------

    def snapshots_due(self, every: int, force: bool = False) -> list[int]:
        """Partitions with `every` or more events since their last snapshot (any, when forced).
        A broken partition never gets one: a checkpoint must never paper over a broken log."""
        return [
            p
            for p in sorted(self.owned - set(self.broken))
            if self.dirty[p] and (force or self.since_checkpoint[p] >= every)
        ]

    def snapshot_records(self, p: int) -> list[tuple[bytes, bytes]]:
        """(key, value) records of partition `p`'s snapshot: each changed aggregate, then the
        checkpoint. Call `snapshotted(p)` once they are committed."""
        records = [(agg_id.encode(), self.snapshots.encode(self.entries[agg_id])) for agg_id in sorted(self.dirty[p])]
        records.append((CHECKPOINT_KEY, self.snapshots.checkpoint(self.next_offset[p])))
        return records

    def snapshotted(self, p: int) -> None:
        self.dirty[p].clear()
        self.since_checkpoint[p] = 0

    # ---- reads -------------------------------------------------------------------

    def state(self, aggregate_id: str) -> tuple[DomainModel, int]:
        entry = self.entries.get(aggregate_id)
        if entry is None:
            return self.aggregate.initial(), 0
        return entry.state, entry.version

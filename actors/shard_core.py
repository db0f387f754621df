"""The pure core of a shard: the aggregate slots of its partitions, command dedup, the deadline
heap and the snapshot codec. It decides commands and folds events, but does no Kafka I/O: the
Kafka side (`actors.shard`) feeds it the records it reads and tells it what a transaction
committed. Unit-tested without Kafka.

Passivation: at most `max_in_memory` aggregates stay in memory, least recently used first out.
An evicted aggregate goes to its partition's store (`actors.aggregate_store`), which also holds
the partition's snapshots, and comes back from there on its next command, with its deadline,
its recent command ids and its version intact."""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import create_model

from actors.aggregate import Aggregate, DomainError, HasDeadlines, benign_rejections
from actors.aggregate_store import PartitionStore, Row
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
SEEN_CAPACITY = 10_000
"""Recent command outcomes kept in memory, so that a command retried at once (a Ray retry) is
answered without a lookup; older client commands are answered from the durable dedup index, and
policy commands from the aggregates' recent command ids."""
SPILL_BATCH = 1000
"""Evicted aggregates written to their stores in one go."""

Staged = list[tuple[Envelope, Event]]
"""The events one accepted command appends, in order, not yet committed."""


@dataclass
class Entry:
    """One aggregate's slot: its state, version and the ids of the last commands it applied."""

    state: DomainModel
    version: int
    recent: tuple[str, ...] = ()
    saved: int = field(default=-1, compare=False)
    """The version its store holds: evicting it writes nothing when that is current."""


class SnapshotCodec:
    """One aggregate's snapshot as JSON, written and parsed by pydantic's Rust core. Each carries
    the fingerprint of the state's JSON schema: a snapshot of another schema (the state type
    changed) does not decode, so its partition replays from the event log instead."""

    def __init__(self, state_type: type[DomainModel]) -> None:
        self.model = create_model(
            f"{state_type.__name__}Snapshot",
            state=(state_type, ...),
            version=(int, ...),
            recent=(tuple[str, ...], ()),
            state_schema=(str, ""),
        )
        described = json.dumps(state_type.model_json_schema(), sort_keys=True).encode()
        self.schema = hashlib.sha256(described).hexdigest()[:12]

    def encode(self, entry: Entry) -> bytes:
        snap = self.model(state=entry.state, version=entry.version, recent=entry.recent, state_schema=self.schema)
        return snap.model_dump_json().encode()

    def decode(self, value: bytes) -> Entry:
        snap: Any = self.model.model_validate_json(value)
        if snap.state_schema != self.schema:
            raise ValueError(f"a snapshot of state schema {snap.state_schema or '(unversioned)'}, not {self.schema}")
        return Entry(snap.state, snap.version, snap.recent)

    @staticmethod
    def checkpoint(next_offset: int, complete: bool = False) -> bytes:
        """The record closing a snapshot. `complete`: the snapshot holds every aggregate of the
        partition, so it supersedes every earlier one (readers forget those first)."""
        marker: dict[str, Any] = {"next_offset": next_offset, "at": time.time()}
        if complete:
            marker["complete"] = True
        return json.dumps(marker).encode()

    @staticmethod
    def checkpoint_offset(value: bytes) -> int:
        return int(json.loads(value)["next_offset"])

    @staticmethod
    def checkpoint_supersedes(value: bytes) -> bool:
        """A checkpoint that voids every earlier snapshot: one `choreo snapshots drop` wrote, or
        one closing a complete snapshot."""
        marker = json.loads(value)
        return bool(marker.get("dropped") or marker.get("complete"))


class ShardCore:
    """Single writer for the aggregates of `owned` partitions (of `partitions` in the topic).
    Not thread-safe: one caller at a time."""

    def __init__(
        self,
        aggregate: Aggregate[Any],
        registry: Registry,
        owned: Iterable[int],
        partitions: int,
        events_topic: str,
        stores: dict[int, PartitionStore] | None = None,
        max_in_memory: int | None = None,
    ) -> None:
        self.aggregate = aggregate
        self.expiring = aggregate if isinstance(aggregate, HasDeadlines) else None
        self.benign = benign_rejections(aggregate)
        self.registry = registry
        self.owned = set(owned)
        self.partitions = partitions
        self.events_topic = events_topic
        self.snapshots = SnapshotCodec(aggregate.state_type)
        self.stores = stores if stores is not None else {p: PartitionStore(None) for p in self.owned}
        for p, store in self.stores.items():
            if store.schema != self.snapshots.schema:  # new, or written under another state schema
                self.forget_store(p)
        self.max_in_memory = max_in_memory
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        """The aggregates in memory, least recently used first."""
        self.spilled: dict[str, Entry] = {}
        """Evicted aggregates not yet written to their stores."""
        self.unsaved: dict[int, tuple[list[Row], int]] = {}
        """Per partition, the snapshot handed out by `snapshot_records` and not yet committed."""
        self.skipped = 0
        """Events replay skipped because the store already held them (evicted past a checkpoint)."""
        self.complete_due: set[int] = set()
        """Partitions replayed from the start: their next snapshot holds every aggregate."""
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
        """Forget everything but the stores, before rehydrating afresh."""
        self.flush_spills()
        self.entries.clear()
        self.unsaved.clear()
        self.complete_due.clear()
        self.skipped = 0
        self.seen.clear()
        self.broken.clear()
        self.deadlines.clear()
        self.scheduled.clear()
        for p in self.owned:
            self.next_offset[p] = 0
            self.since_checkpoint[p] = 0
            self.dirty[p].clear()

    def snapshot_starts(self) -> dict[int, int]:
        """Per partition, the snapshot-topic offset its store has applied up to."""
        return {p: self.stores[p].snapshot_next for p in sorted(self.owned)}

    def forget_store(self, p: int) -> None:
        """Empty partition `p`'s store (stale: the topics were recreated, or the state schema
        changed): it is read afresh from the snapshot topic."""
        self.stores[p].forget(self.snapshots.schema)

    def restore_snapshots(self, records: Iterable[LogRecord]) -> tuple[dict[int, int], int]:
        """Apply the snapshot topic's records past each store's offset to the stores. Returns, per
        partition, the event offset its snapshots cover (replay starts there), and how many
        aggregate records were applied. A partition with a snapshot it cannot read (corrupt, or
        of another state schema) replays from 0, unless a later complete snapshot supersedes
        it; so does one whose snapshots were dropped. Open deadlines are loaded from the stores."""
        pending: dict[int, list[Row]] = {p: [] for p in self.owned}
        unreadable: dict[int, int] = {}
        """Partitions whose current snapshot has a record that cannot be read, and where."""
        poisoned: dict[int, int] = {}
        """Partitions that read an unreadable snapshot that nothing superseded since."""
        restored: Counter[int] = Counter()
        for record in records:
            p, offset = record.partition() or 0, record.offset() or 0
            if p not in self.owned:
                continue
            key, value = record.key() or b"", record.value() or b""
            try:
                if key != CHECKPOINT_KEY:
                    pending[p].append(self._row(key.decode(), self.snapshots.decode(value), value))
                    continue
                checkpoint = self.snapshots.checkpoint_offset(value)
                supersedes = self.snapshots.checkpoint_supersedes(value)
            except (ValueError, KeyError, TypeError) as exc:
                # Case 2 of the runbook: a corrupt snapshot is ignored and the partition replays.
                if p not in unreadable and p not in poisoned:
                    log.warning("snapshot partition %d: unreadable record at offset %d (%s)", p, offset, exc)
                unreadable[p] = offset
                continue
            if supersedes:
                poisoned.pop(p, None)
            if p in unreadable:
                poisoned[p] = unreadable.pop(p)
            if p not in poisoned:
                store = self.stores[p]
                wipe = supersedes or checkpoint < (store.checkpoint or 0)
                store.apply_snapshot(pending[p], checkpoint, offset + 1, wipe)
                restored[p] = len(pending[p]) + (0 if wipe else restored[p])
            else:
                poisoned[p] = offset
            pending[p] = []
        for p, last in {**poisoned, **unreadable}.items():
            log.warning("snapshot partition %d cannot be read; replaying it from 0", p)
            self.stores[p].apply_snapshot([], None, last + 1, wipe=True)
            del restored[p]
        checkpoints: dict[int, int] = {}
        for p in self.owned:
            covered = self.stores[p].checkpoint
            if covered is not None:
                checkpoints[p] = self.next_offset[p] = covered
            else:
                self.complete_due.add(p)
            for agg_id, due in self.stores[p].dues():
                self._schedule(agg_id, due)
        return checkpoints, restored.total()

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
        entry = self._get(env.aggregate_id) or Entry(self.aggregate.initial(), 0)
        if env.version <= entry.version:
            # The store holds this aggregate past the checkpoint (it was evicted): nothing to fold,
            # but the next snapshot must carry it, since its checkpoint will cover this event.
            self.skipped += 1
            self._remember(env.causation_id, stored)
            self.since_checkpoint[p] += 1
            self.dirty[p].add(env.aggregate_id)
            return
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
        self._hold(agg_id, entry)
        if self.expiring is None:
            return
        due = self.expiring.due_at(entry.state)
        if due is None:
            self.scheduled.pop(agg_id, None)
        else:
            self._schedule(agg_id, due)

    def _schedule(self, agg_id: str, due: datetime) -> None:
        if self.scheduled.get(agg_id) != due:
            self.scheduled[agg_id] = due
            heapq.heappush(self.deadlines, (due, agg_id))

    # ---- passivation ---------------------------------------------------------------

    def _hold(self, agg_id: str, entry: Entry) -> None:
        """Keep `entry` in memory as the most recently used, evicting the least recently used
        aggregates beyond the budget."""
        self.entries[agg_id] = entry
        self.entries.move_to_end(agg_id)
        self.spilled.pop(agg_id, None)
        if self.max_in_memory is None:
            return
        while len(self.entries) > self.max_in_memory:
            old_id, old = self.entries.popitem(last=False)
            if old.saved != old.version:
                self.spilled[old_id] = old
        if len(self.spilled) >= SPILL_BATCH:
            self.flush_spills()

    def _get(self, agg_id: str, promote: bool = True) -> Entry | None:
        """An aggregate's slot from memory, or from its store (held in memory again when `promote`)."""
        entry = self.entries.get(agg_id)
        if entry is not None:
            if promote:
                self.entries.move_to_end(agg_id)
            return entry
        entry = self.spilled.get(agg_id)
        if entry is None:
            store = self.stores.get(self.partition_of(agg_id))
            raw = store.load([agg_id]).get(agg_id) if store is not None else None
            if raw is None:
                return None
            entry = self._loaded(raw)
        if promote:
            self._hold(agg_id, entry)
        return entry

    def _loaded(self, raw: bytes) -> Entry:
        entry = self.snapshots.decode(raw)
        entry.saved = entry.version
        return entry

    def prefetch(self, aggregate_ids: Iterable[str]) -> None:
        """Bring the evicted aggregates among `aggregate_ids` back into memory, one store query
        per partition (instead of one per command)."""
        wanted: dict[int, list[str]] = {}
        for agg_id in set(aggregate_ids):
            if agg_id not in self.entries and agg_id not in self.spilled:
                p = self.partition_of(agg_id)
                if p in self.stores:
                    wanted.setdefault(p, []).append(agg_id)
        for p, ids in wanted.items():
            for agg_id, raw in self.stores[p].load(ids).items():
                self._hold(agg_id, self._loaded(raw))

    def flush_spills(self) -> None:
        """Write the evicted aggregates to their stores."""
        by_partition: dict[int, list[Row]] = {}
        for agg_id, entry in self.spilled.items():
            by_partition.setdefault(self.partition_of(agg_id), []).append(self._row(agg_id, entry))
        for p, rows in by_partition.items():
            self.stores[p].put(rows)
        for entry in self.spilled.values():
            entry.saved = entry.version
        self.spilled.clear()

    def _row(self, agg_id: str, entry: Entry, encoded: bytes | None = None) -> Row:
        due = self.expiring.due_at(entry.state) if self.expiring is not None else None
        value = encoded if encoded is not None else self.snapshots.encode(entry)
        return (agg_id, entry.version, due.timestamp() if due is not None else None, value)

    def all_entries(self) -> dict[str, Entry]:
        """Every aggregate of the owned partitions, in memory or evicted (reads every store)."""
        self.flush_spills()
        found = {agg_id: self._loaded(raw) for store in self.stores.values() for agg_id, raw in store.rows()}
        found.update(self.entries)
        return found

    def stored(self) -> int:
        """Aggregates in the stores (evicted or snapshotted)."""
        return sum(store.size() for store in self.stores.values())

    # ---- partition moves (live rescaling) -------------------------------------------

    def release(self, p: int) -> None:
        """Partition `p` moves to another shard: forget its aggregates, deadlines and bookkeeping,
        and close its store. Snapshot it first, so that its new owner replays no tail."""
        self.flush_spills()
        for table in (self.entries, self.scheduled):
            for agg_id in [a for a in table if self.partition_of(a) == p]:
                del table[agg_id]  # a deadline left in the heap is skipped: it is no longer scheduled
        self.owned.discard(p)
        for per_partition in (self.next_offset, self.since_checkpoint, self.dirty, self.broken, self.unsaved):
            per_partition.pop(p, None)
        self.complete_due.discard(p)
        self.stores.pop(p).close()

    def absorb(self, other: ShardCore) -> None:
        """Take over the partitions `other` rehydrated (moved here) with everything it holds."""
        other.flush_spills()
        for p in other.owned:
            self.owned.add(p)
            self.stores[p] = other.stores[p]
            self.next_offset[p] = other.next_offset[p]
            self.since_checkpoint[p] = other.since_checkpoint[p]
            self.dirty[p] = other.dirty[p]
            if p in other.broken:
                self.broken[p] = other.broken[p]
        self.complete_due |= other.complete_due
        self.skipped += other.skipped
        for agg_id, entry in other.entries.items():
            self._hold(agg_id, entry)
        for agg_id, due in other.scheduled.items():
            self._schedule(agg_id, due)
        for cid, stored in other.seen.items():
            self._seen(cid, stored)
        other.stores, other.owned = {}, set()

    def close(self) -> None:
        self.flush_spills()
        for store in self.stores.values():
            store.close()

    def _remember(self, command_id: str, stored: StoredEvent) -> None:
        events = self.seen.get(command_id)
        if events is None:
            self._seen(command_id, [stored])
        else:
            events.append(stored)

    def _seen(self, command_id: str, stored: list[StoredEvent]) -> None:
        """Remember a command's events for retries, forgetting the oldest beyond SEEN_CAPACITY."""
        self.seen[command_id] = stored
        if len(self.seen) > SEEN_CAPACITY:
            self.seen.popitem(last=False)

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
        entry = pending.get(agg_id) or self._get(agg_id) or Entry(self.aggregate.initial(), 0)
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
            self._seen(cid, stored)
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
        checkpoint. Call `snapshotted(p, ...)` once they are committed."""
        rows = []
        for agg_id in sorted(self.dirty[p]):
            entry = self._get(agg_id, promote=False)
            assert entry is not None, f"{agg_id} changed but is neither in memory nor stored"
            rows.append(self._row(agg_id, entry))
        self.unsaved[p] = (rows, self.next_offset[p])
        records = [(agg_id.encode(), value) for agg_id, _, _, value in rows]
        records.append((CHECKPOINT_KEY, self.snapshots.checkpoint(self.next_offset[p], p in self.complete_due)))
        return records

    def snapshotted(self, p: int, snapshot_next: int) -> None:
        """Partition `p`'s snapshot committed, its checkpoint just before `snapshot_next`: its
        store applies it, as it would on reading it from the topic."""
        rows, checkpoint = self.unsaved.pop(p)
        self.stores[p].apply_snapshot(rows, checkpoint, snapshot_next, wipe=p in self.complete_due)
        self.complete_due.discard(p)
        for agg_id, version, _, _ in rows:
            entry = self.entries.get(agg_id) or self.spilled.get(agg_id)
            if entry is not None and entry.version == version:
                entry.saved = version
        self.dirty[p].clear()
        self.since_checkpoint[p] = 0

    # ---- reads -------------------------------------------------------------------

    def state(self, aggregate_id: str) -> tuple[DomainModel, int]:
        entry = self._get(aggregate_id, promote=False)
        if entry is None:
            return self.aggregate.initial(), 0
        return entry.state, entry.version

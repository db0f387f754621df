"""One shard of a service, its Kafka side: rehydrates the pure core (`actors.shard_core`) from
snapshot + event tail, appends the events it decides in Kafka transactions with a stable
transactional.id per partition, records client command outcomes in the dedup topic, parks what it
refuses in the dead-letter topic, and writes snapshot checkpoints."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import BaseModel, ConfigDict

from actors.aggregate import Aggregate
from actors.aggregate_store import PartitionStore
from actors.dedup import DedupStore, Recorded
from actors.live_spans import LiveSpans, TracingConfig, header_of
from actors.outcomes import Accepted, Outcome, Rejected
from actors.runtime import Watchdog
from actors.shard_core import Entry, ShardCore, Staged
from events.base import Command, DomainModel, StoredEvent
from events.log.dlq import DeadLetter, dead_letter_from, send_dead_letter
from events.log.kafka_io import (
    TXN_OP_S,
    assign_committed,
    committed_starts,
    consumer_config,
    data_messages,
    is_abortable,
    is_fatal,
    position,
    producer_config,
    read_to_end,
    watermarks,
    write_outage,
)
from events.log.owners import owners_of, read_owners
from events.log.topics import (
    commands_topic,
    dedup_topic,
    dlq_topic,
    events_topic,
    owned_partitions,
    owners_topic,
    partition_for,
    shard_group,
    snapshots_topic,
)
from events.registry import DecodeError, Registry, event_headers

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("choreo.shard")

UNRECORDED = frozenset({"wrong_shard", "partition_unavailable", "handler_error"})
"""Rejections that are not decisions of the domain: a resubmit decides afresh."""


class ShardFenced(RuntimeError):
    """A newer instance of this shard took over its transactional.id; this one may not append."""


class ShardConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    aggregate: str
    """Import path of the aggregate's class or factory (metadata.services.<service>.aggregate)."""
    messages: str
    """Import path of the service's events.Messages (metadata.services.<service>.messages)."""
    python_path: tuple[str, ...] = ()
    """Directories of declared code that is not installed (metadata.python_path)."""
    shard: int
    shards: int
    partitions: int
    kafka: dict[str, str]
    namespace: str = "choreo"
    topic_prefix: str = ""
    snapshot_every: int = 1000
    batch_max: int = 2000
    poll_ms: int = 25
    deadline_s: float | None = None
    dedup_window_s: float = 86_400.0
    state_dir: str = ".choreo/state"
    """Local directory of the dedup indexes and aggregate stores (caches of the dedup and
    snapshot topics)."""
    max_aggregates: int | None = 50_000
    """Aggregates kept in memory; the least recently used beyond it are evicted to the aggregate
    store (passivation). None keeps every aggregate in memory."""
    tracing: TracingConfig = TracingConfig()
    """Live spans (metadata.tracing); off unless its `sample` is above 0."""
    held_back_wait_s: float = 90.0
    """How long rehydration waits for an open transaction that holds back one of its partitions
    (past the broker's transaction timeout) before it refuses the partition."""

    @property
    def name(self) -> str:
        """The shard's name in logs, metrics and dead letters (`<namespace>-<service>-shard-<n>`)."""
        return f"{self.namespace}-{self.service}-shard-{self.shard}"

    def transactional_id(self, partition: int) -> str:
        """One transactional producer per partition: whoever owns a partition, under any shard count,
        holds this id, so starting it fences every earlier writer of that partition. The topic
        prefix keeps two deployments on one broker from fencing each other."""
        return f"{self.topic_prefix}choreo-{self.service}-p{partition}"

    @property
    def legacy_transactional_ids(self) -> list[str]:
        """The per-shard ids of earlier versions that may have written this shard's partitions.
        Transactions left open under them would hold back every read_committed reader."""
        return [
            f"{self.namespace}-{self.service}-shard-{i}"
            for i in range(self.partitions)
            if i % self.shards == self.shard
        ]

    @property
    def owned(self) -> list[int]:
        return owned_partitions(self.shard, self.shards, self.partitions)


@dataclass
class Batch:
    """Commands to decide in one transaction, with the consumed offsets it commits (if any)."""

    commands: list[Command]
    sources: list[Message] | None = None
    offsets: list[TopicPartition] | None = None
    group_metadata: Any = None
    letters: list[DeadLetter] = field(default_factory=list)
    client: bool = False
    """Commands from clients: their outcomes are recorded for the dedup window."""
    marks: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    """(topic, key, value) records committed in the same transaction, e.g. redrive done marks."""
    received_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    """When the shard took the commands: their events' Kafka timestamp (derived traces time each
    hop of a saga from it, see `choreography.traces`)."""


@dataclass
class Txn:
    """One partition's transaction between staging and commit: what it decided and produced."""

    p: int
    batch: Batch
    outcomes: list[Outcome | None]
    pending: dict[str, Entry] = field(default_factory=dict)
    """The aggregates' new slots, current once the transaction commits."""
    appended: list[tuple[int, Staged]] = field(default_factory=list)
    """(command index, its staged events) of the commands that append events."""
    spans: list[Span] = field(default_factory=list)
    """Live spans of its sampled commands, ended once it commits."""
    positions: dict[tuple[int, int], tuple[int, int] | KafkaError] = field(default_factory=dict)
    recorded: list[int] = field(default_factory=list)
    """Indices of the client commands whose outcomes go to the dedup topic."""
    parked: list[str] = field(default_factory=list)
    records: list[tuple[str, Recorded, int]] = field(default_factory=list)


@dataclass
class Prepared:
    """A partition rehydrated beside the serving shard, ready to adopt."""

    partition: int
    producer: Producer
    core: ShardCore
    dedup: DedupStore
    stats: RehydrationStats
    commands_at: list[TopicPartition]
    """Where its commands resume: the offset the previous owner committed last."""


@dataclass
class RehydrationStats:
    events: int = 0
    snapshots: int = 0
    seconds: float = 0.0
    from_checkpoint: dict[int, int] = field(default_factory=dict)
    dedup_caught_up: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class Shard:
    """Single writer for the aggregates in its partitions. Not thread-safe: one caller at a time."""

    def __init__(
        self, config: ShardConfig, aggregate: Aggregate[Any], registry: Registry, watchdog: Watchdog | None = None
    ) -> None:
        self.config = config
        self.watchdog = watchdog or Watchdog()
        self.registry = registry
        self.events_topic = events_topic(config.service, config.topic_prefix)
        self.snapshots_topic = snapshots_topic(config.service, config.topic_prefix)
        self.commands_topic = commands_topic(config.service, config.topic_prefix)
        self.dlq_topic = dlq_topic(config.topic_prefix)
        self.dedup_topic = dedup_topic(config.service, config.topic_prefix)
        self.stage = f"shard {config.name}"
        self.live = LiveSpans(config.tracing, config.service) if config.tracing.live else None
        self.state_dir = Path(config.state_dir) / config.namespace / f"{config.topic_prefix}{config.service}"
        owned = self._owned_now()
        self.dedup, self.core = self._partition_state(aggregate, owned)
        self.owned = self.core.owned
        self.command_consumer: Consumer | None = None
        self.parked_rejections: Counter[str] = Counter()
        """Rejected command-topic commands sent to the dead-letter topic, by rejection code."""
        self.transactions = 0
        """Kafka transactions committed (the loadtest's cost model counts them per order)."""
        self.dedup_stale = False
        self.reader: Consumer | None = None
        self.completer: ThreadPoolExecutor | None = None
        """Threads that complete a batch's transactions of several partitions at once."""
        # init_transactions fences every earlier writer of a partition and aborts its open
        # transaction; so do the legacy ids, whose producers are dropped right after.
        self.producers = self._fence(owned)
        self._fence([], config.legacy_transactional_ids)
        self.stats = self.rehydrate()

    def _owned_now(self) -> list[int]:
        """This shard's partitions in the current partition map (round-robin when there is none)."""
        c = self.config
        maps = read_owners(c.kafka, owners_topic(c.topic_prefix), self.loader_group)
        return owners_of(maps, c.service, c.shards, c.partitions).owned(c.shard)

    def _partition_state(self, aggregate: Aggregate[Any], partitions: list[int]) -> tuple[DedupStore, ShardCore]:
        """Dedup indexes and a core for `partitions`, on their local stores (not yet rehydrated)."""
        c = self.config
        stores = {p: PartitionStore(self.state_dir / f"aggregates-p{p}.sqlite3") for p in partitions}
        topic = self.events_topic
        core = ShardCore(aggregate, self.registry, partitions, c.partitions, topic, stores, c.max_aggregates)
        return DedupStore(self.state_dir, partitions, c.dedup_window_s), core

    def _fence(self, partitions: list[int], legacy: Sequence[str] = ()) -> dict[int, Producer]:
        """Transactional producers of `partitions` (and of `legacy` ids, dropped at once), each
        initialised: that fences every earlier writer under its id and aborts its open transaction."""
        kafka = self.config.kafka
        producers = {p: Producer(producer_config(kafka, self.config.transactional_id(p))) for p in partitions}
        others = [Producer(producer_config(kafka, t)) for t in legacy]
        with ThreadPoolExecutor(max_workers=8) as pool:  # the fencing round trips overlap
            list(pool.map(lambda producer: producer.init_transactions(60), [*producers.values(), *others]))
        return producers

    # ---- rehydration -------------------------------------------------------------

    @property
    def loader_group(self) -> str:
        """The group id this shard reads its topics under (it commits nothing)."""
        return f"{self.config.namespace}-{self.config.service}-shard-{self.config.shard}-loader"

    def _consumer(self) -> Consumer:
        return Consumer(consumer_config(self.config.kafka, self.loader_group, **{"enable.partition.eof": True}))

    def rehydrate(self, core: ShardCore | None = None, dedup: DedupStore | None = None) -> RehydrationStats:
        """Load snapshots and replay the event tail. Our own producers fenced their predecessors
        and had their transactions completed, so a transaction still open in one of our
        partitions is one the coordinator is still completing, or no longer tracks (a broker crash
        can leave one hanging): a read_committed read stops at it, and would serve state that
        misses every event committed after it. Wait for it to end; if it does not, refuse the
        partition rather than decide on stale state. Never abort it: it may hold events a client
        was told are accepted."""
        core, dedup = core or self.core, dedup or self.dedup
        deadline = time.monotonic() + self.config.held_back_wait_s
        while True:
            held_back: dict[tuple[str, int], tuple[int, int]] = {}
            stats = self._rehydrate_once(core, dedup, held_back)
            if not held_back or time.monotonic() >= deadline:
                break
            log.warning(
                "%s: an open transaction holds back %s; waiting for it to end", self.config.name, _held_back(held_back)
            )
            time.sleep(1.0)
        for (topic, p), (stable, high) in held_back.items():
            core.break_partition(
                p,
                f"an open transaction holds back offsets {stable}..{high - 1} of {topic}[{p}] (one the broker no "
                f"longer tracks); find and abort it with kafka-transactions.sh (find-hanging, abort --topic {topic} "
                f"--partition {p} --start-offset {stable}), then restart the shard",
            )
        return stats

    def _rehydrate_once(
        self, core: ShardCore, dedup: DedupStore, held_back: dict[tuple[str, int], tuple[int, int]]
    ) -> RehydrationStats:
        """One read of snapshots, event tail and dedup records; `held_back` collects the
        (topic, partition)s an open transaction kept it from reading to their end."""
        started = time.perf_counter()
        stats = RehydrationStats()
        core.reset()
        consumer = self._consumer()
        try:
            held: dict[int, tuple[int, int]] = {}
            self._forget_stale_stores(consumer, core)
            snapshots = read_to_end(consumer, self.snapshots_topic, core.snapshot_starts(), held)
            checkpoints, stats.snapshots = core.restore_snapshots(snapshots)
            held_back |= {(self.snapshots_topic, p): where for p, where in held.items()}
            stats.from_checkpoint = {p: o for p, o in checkpoints.items() if o > 0}
            starts = {p: checkpoints.get(p, 0) for p in core.owned}
            held = {}
            for msg in read_to_end(consumer, self.events_topic, starts, held):
                core.replay(msg)
                stats.events += 1
            held_back |= {(self.events_topic, p): where for p, where in held.items()}
            stats.dedup_caught_up = dedup.catch_up(read_to_end(consumer, self.dedup_topic, dedup.starts()))
        finally:
            consumer.close()
        stats.seconds = time.perf_counter() - started
        log.info(
            "%s rehydrated %d aggregates of partitions %s from %d snapshots + %d events in %.2fs",
            self.config.name, len(core.entries), sorted(core.owned), stats.snapshots, stats.events,
            stats.seconds,
        )  # fmt: skip
        return stats

    def _forget_stale_stores(self, consumer: Consumer, core: ShardCore) -> None:
        """An aggregate store past the end of its topics belongs to topics since deleted."""
        for p, store in core.stores.items():
            ahead = store.snapshot_next > watermarks(consumer, self.snapshots_topic, p)[1]
            if ahead or (store.checkpoint or 0) > watermarks(consumer, self.events_topic, p)[1]:
                log.warning("%s: the aggregate store of partition %d is stale; reading it afresh", self.config.name, p)
                core.forget_store(p)

    # ---- partition moves (live rescaling) ------------------------------------------

    def release(self, p: int) -> None:
        """Hand partition `p` over to another shard: snapshot it (so that its new owner replays no
        tail), stop consuming its commands, and drop its state and its producer. Commands for it
        are answered `wrong_shard` from now on; the client API retries them at the new owner."""
        if p not in self.owned:
            return
        if p in self.core.snapshots_due(self.config.snapshot_every, force=True):
            self._snapshot(p)
        if self.command_consumer is not None and p not in self.broken:
            self.command_consumer.incremental_unassign([TopicPartition(self.commands_topic, p)])
        self.core.release(p)
        self.dedup.release(p)
        self.producers.pop(p).flush(10)
        log.info("%s released partition %d", self.config.name, p)

    def prepare(self, p: int) -> Prepared:
        """Rehydrate partition `p`, moving here, beside the serving shard: fence its previous owner,
        then load its snapshot, event tail and dedup records into state of its own. Touches nothing
        the serving shard uses, so it needs no lock; `adopt` then merges it in."""
        producers = self._fence([p])
        dedup, core = self._partition_state(self.core.aggregate, [p])
        try:
            stats = self.rehydrate(core, dedup)
            # After the fencing: the old owner's last offset commit is final.
            commands_at = committed_starts(
                self.config.kafka, self.commands_group, [TopicPartition(self.commands_topic, p)]
            )
        except BaseException:
            dedup.close()
            core.close()
            raise
        return Prepared(p, producers[p], core, dedup, stats, commands_at)

    def adopt(self, prepared: Prepared) -> None:
        """Serve a partition `prepare` rehydrated: its commands are taken from now on."""
        p = prepared.partition
        self.core.absorb(prepared.core)
        self.dedup.absorb(prepared.dedup)
        self.producers[p] = prepared.producer
        if self.command_consumer is not None and p not in self.broken:
            self.command_consumer.incremental_assign(prepared.commands_at)
        log.info("%s adopted partition %d (%.2fs to rehydrate)", self.config.name, p, prepared.stats.seconds)

    @property
    def entries(self) -> dict[str, Entry]:
        """The aggregates in memory (see `all_entries` for the evicted ones too)."""
        return self.core.entries

    def all_entries(self) -> dict[str, Entry]:
        return self.core.all_entries()

    @property
    def broken(self) -> dict[int, str]:
        return self.core.broken

    @property
    def next_offset(self) -> dict[int, int]:
        return self.core.next_offset

    # ---- command handling --------------------------------------------------------

    def handle(self, commands: list[Command]) -> list[Outcome]:
        """Decide a batch of commands and append all resulting events in one transaction."""
        return self._transact(Batch(commands, client=True))

    def _transact(self, batch: Batch) -> list[Outcome]:
        """One Kafka transaction per partition the batch touches, each with that partition's
        producer. With several partitions, the transactions are staged one after another and then
        completed together: their round trips to the brokers overlap instead of adding up."""
        outcomes: list[Outcome | None] = [None] * len(batch.commands)
        if batch.client:
            self._answer_duplicates(batch.commands, outcomes)
        groups = self._split(batch, outcomes)
        parts = {p: part for p, (_, part) in groups.items()}
        if len(parts) > 1:
            decided = self._transact_overlapped(parts)
        else:  # one partition, or none (every command answered already): nothing to overlap
            decided = {p: self._transact_partition(p, part) for p, part in parts.items()}
        for p, (indices, _) in groups.items():
            for i, outcome in zip(indices, decided[p], strict=True):
                outcomes[i] = outcome
        self._maybe_snapshot()
        return [o for o in outcomes if o is not None]

    def _split(self, batch: Batch, outcomes: list[Outcome | None]) -> dict[int, tuple[list[int], Batch]]:
        """Group a batch by partition: a command by the partition of the message that carried it (or
        of its aggregate), dead letters and consumed offsets by their command-topic partition."""
        groups: dict[int, tuple[list[int], Batch]] = {}

        def group(p: int) -> tuple[list[int], Batch]:
            if p not in groups:
                sources: list[Message] | None = [] if batch.sources else None
                groups[p] = (
                    [],
                    Batch([], sources, [], batch.group_metadata, client=batch.client, received_ms=batch.received_ms),
                )
            return groups[p]

        for i, cmd in enumerate(batch.commands):
            if outcomes[i] is not None:  # a duplicate, answered already
                continue
            source = batch.sources[i] if batch.sources else None
            p = position(source)[0] if source is not None else partition_for(cmd.aggregate_id, self.config.partitions)
            if p not in self.owned:
                outcomes[i] = Rejected(cmd.command_id, "wrong_shard", f"{cmd.aggregate_id} belongs to partition {p}")
                continue
            indices, part = group(p)
            indices.append(i)
            part.commands.append(cmd)
            if part.sources is not None and source is not None:
                part.sources.append(source)
        # A partition this shard no longer owns (it moved) is neither parked nor committed: its
        # new owner consumes the same messages again.
        for letter in batch.letters:
            if letter.partition in self.owned:
                group(letter.partition)[1].letters.append(letter)
        for tp in batch.offsets or ():
            if tp.partition not in self.owned:
                continue
            offsets = group(tp.partition)[1].offsets
            assert offsets is not None
            offsets.append(tp)
        if batch.marks:
            first = next(iter(groups.values()), None) or group(min(self.owned))
            first[1].marks.extend(batch.marks)
        return groups

    def _transact_overlapped(self, parts: dict[int, Batch]) -> dict[int, list[Outcome]]:
        """Stage every partition's transaction, complete them all at once (their flushes and
        commits wait on the brokers in parallel threads; the client releases the GIL meanwhile),
        then apply each committed one. A partition whose transaction failed is recovered as alone
        (aborted and retried, or its error raised) once the others are applied."""
        staged: list[Txn] = []
        failed: dict[int, Exception] = {}
        for p, part in parts.items():
            try:
                staged.append(self._stage(p, part))
            except Exception as exc:  # recovered below, like a failure to complete
                failed[p] = exc
        if self.completer is None:
            self.completer = ThreadPoolExecutor(max_workers=self.config.partitions, thread_name_prefix="transactions")
        completing = [(txn, self.completer.submit(self._complete, txn)) for txn in staged]
        decided: dict[int, list[Outcome]] = {}
        for txn, future in completing:
            try:
                future.result()
            except Exception as exc:
                failed[txn.p] = exc
            else:
                decided[txn.p] = self._apply(txn)
        for p, error in failed.items():
            decided[p] = self._transact_partition(p, parts[p], failed=error)
        return decided

    def _transact_partition(self, p: int, batch: Batch, failed: Exception | None = None) -> list[Outcome]:
        """Partition `p`'s transaction, retried after an abortable error (up to three attempts in
        all); `failed` is the error of an attempt made already."""
        attempts = 0
        while True:
            if failed is not None:
                attempts += 1
                self._recover(p, failed, last=attempts == 3)
            try:
                return self._transact_once(p, batch)
            except Exception as exc:
                failed = exc

    def _recover(self, p: int, exc: Exception, last: bool) -> None:
        """Abort partition `p`'s failed transaction so it can be retried, or raise: a fenced
        producer as ShardFenced, any other error that is not abortable (or on the last attempt) as it is."""
        if isinstance(exc, SystemError):
            # librdkafka can raise a fatal error from inside flush()'s callback dispatch.
            cause = exc.__cause__ or exc.__context__
            if not isinstance(cause, KafkaException):
                raise exc
            exc = cause
        if isinstance(exc, KafkaException) and is_fatal(exc):
            who = self.config.transactional_id(p)
            raise ShardFenced(f"{who} ({self.config.name}) was fenced by a newer instance: {exc}") from None
        if not isinstance(exc, KafkaException) or not is_abortable(exc) or last:
            raise exc
        log.warning("transaction aborted (%s); retrying the batch", exc)
        with self.watchdog.bound(f"abort_transaction of {self.config.transactional_id(p)}", 30):
            self.producers[p].abort_transaction(30)

    def _transact_once(self, p: int, batch: Batch) -> list[Outcome]:
        """Decide the batch's commands of partition `p` and commit their events, dedup records,
        dead letters and consumed offsets in one transaction of the partition's producer."""
        txn = self._stage(p, batch)
        self._complete(txn)
        return self._apply(txn)

    def _stage(self, p: int, batch: Batch) -> Txn:
        """Begin partition `p`'s transaction: decide its commands and produce their events, and the
        dead letters and marks. Nothing in memory moves until `_apply`."""
        producer = self.producers[p]
        txn = Txn(p, batch, [None] * len(batch.commands))
        self.core.prefetch(cmd.aggregate_id for cmd in batch.commands)
        producer.begin_transaction()
        live = self.live
        for i, cmd in enumerate(batch.commands):
            outcome, staged = self.core.decide(cmd, txn.pending, partition=p)
            span = None if live is None else self._span(live, batch, i)
            if outcome is not None:
                if span is not None:
                    LiveSpans.end(span, f"rejected {outcome.code}" if isinstance(outcome, Rejected) else "")
                txn.outcomes[i] = outcome
                if batch.client and isinstance(outcome, Rejected) and outcome.code not in UNRECORDED:
                    txn.recorded.append(i)
                continue
            if batch.client:
                txn.recorded.append(i)
            txn.appended.append((i, staged))
            traced = None
            if span is not None:
                txn.spans.append(span)
                traced = LiveSpans.header(span)
            for j, (env, payload) in enumerate(staged):
                headers = event_headers(env)
                if traced is not None:
                    headers.append(traced)
                producer.produce(
                    self.events_topic,
                    key=env.aggregate_id.encode(),
                    value=self.registry.encode_event(env, payload),
                    partition=p,
                    timestamp=batch.received_ms,
                    headers=headers,
                    on_delivery=partial(_record_position, txn.positions, (i, j)),
                )
        letters = list(batch.letters)
        for i, outcome in enumerate(txn.outcomes):
            source = batch.sources[i] if batch.sources else None
            if source is not None and isinstance(outcome, Rejected) and outcome.code not in self.core.benign:
                # A saga step the aggregate refused must not vanish with its committed offset.
                letters.append(dead_letter_from(source, self.stage, f"rejected {outcome.code}: {outcome.reason}"))
                txn.parked.append(outcome.code)
        for letter in letters:
            send_dead_letter(producer, self.dlq_topic, letter)
        for topic, key, value in batch.marks:
            producer.produce(topic, key=key, value=value)
        return txn

    def _span(self, live: LiveSpans, batch: Batch, i: int) -> Span | None:
        """The live span of the batch's `i`th command: under the traceparent of the record that
        carried it, or the root of its saga when it comes from a client and head sampling picks
        the saga; None for the rest (no SDK call)."""
        cmd = batch.commands[i]
        source = batch.sources[i] if batch.sources else None
        if source is not None:
            parent = header_of(source.headers())
            if parent is None:
                return None
            saga = ""
        else:
            saga = cmd.correlation_id or cmd.aggregate_id
            if not batch.client or not live.picks(saga):
                return None
            parent = None
        attributes = {"choreo.command_id": cmd.command_id, "choreo.aggregate_id": cmd.aggregate_id}
        if saga:
            attributes["choreo.saga_id"] = saga
        kind: Literal["server", "consumer"] = "consumer" if parent else "server"
        return live.start(f"{self.config.service} {cmd.type_name()}", kind, batch.received_ms, parent, saga, attributes)

    def _complete(self, txn: Txn) -> None:
        """Deliver a staged transaction's records, record its client outcomes, and commit it with
        its consumed offsets. Touches only the transaction and its producer (it may run in a thread)."""
        p, batch = txn.p, txn.batch
        producer = self.producers[p]
        self._flush(producer)
        for delivered in txn.positions.values():
            if isinstance(delivered, KafkaError):
                raise KafkaException(delivered)
        txn.records = self._record_outcomes(
            producer, p, batch.commands, txn.recorded, txn.outcomes, txn.appended, txn.positions
        )
        who = self.config.transactional_id(p)
        if batch.offsets:
            with self.watchdog.bound(f"send_offsets_to_transaction of {who}", TXN_OP_S):
                producer.send_offsets_to_transaction(batch.offsets, batch.group_metadata, TXN_OP_S)
        with self.watchdog.bound(f"commit_transaction of {who}", TXN_OP_S):
            producer.commit_transaction(TXN_OP_S)

    def _apply(self, txn: Txn) -> list[Outcome]:
        """A transaction committed: only now does the in-memory state move forward."""
        self.transactions += 1
        for span in txn.spans:
            span.end()
        self.parked_rejections.update(txn.parked)
        self._index_outcomes(txn.p, txn.records)
        commands, outcomes = txn.batch.commands, txn.outcomes
        committed = [
            (
                commands[i].command_id,
                self._stored(staged, [txn.positions[(i, j)] for j in range(len(staged))], txn.batch.received_ms),
            )
            for i, staged in txn.appended
        ]
        for (i, _), accepted in zip(txn.appended, self.core.commit(txn.pending, committed), strict=True):
            outcomes[i] = accepted
        return [o for o in outcomes if o is not None]

    def _stored(
        self, staged: Staged, delivered: list[tuple[int, int] | KafkaError], timestamp_ms: int
    ) -> list[StoredEvent]:
        """The staged events of one command with the log positions their delivery reported."""
        stored = []
        for (env, payload), where in zip(staged, delivered, strict=True):
            assert not isinstance(where, KafkaError)  # raised after the flush
            part, offset = where
            stored.append(StoredEvent(env, payload, self.events_topic, part, offset, timestamp_ms))
        return stored

    # ---- durable dedup of client commands -------------------------------------------

    def _answer_duplicates(self, commands: list[Command], outcomes: list[Outcome | None]) -> None:
        """Answer client commands decided before (within the window) with their original outcome."""
        if self.dedup_stale:
            self._refresh_dedup()
        self.dedup.maybe_purge()
        wanted: dict[int, list[str]] = defaultdict(list)
        for cmd in commands:
            p = partition_for(cmd.aggregate_id, self.config.partitions)
            if p in self.owned and cmd.command_id not in self.core.seen:
                wanted[p].append(cmd.command_id)
        found: dict[str, Recorded] = {}
        for p, ids in wanted.items():
            found |= self.dedup.lookup(p, ids)
        if not found:
            return
        events = self._fetch_events([pos for r in found.values() for pos in r.positions])
        for i, cmd in enumerate(commands):
            rec = found.get(cmd.command_id)
            if rec is None:
                continue
            cid = cmd.command_id
            if rec.accepted:
                outcomes[i] = Accepted(cid, [events[pos] for pos in rec.positions if pos in events], duplicate=True)
            else:
                outcomes[i] = Rejected(cid, rec.code, rec.reason, duplicate=True)

    def _record_outcomes(
        self,
        producer: Producer,
        p: int,
        commands: list[Command],
        recorded: list[int],
        outcomes: list[Outcome | None],
        appended: list[tuple[int, Staged]],
        positions: dict[tuple[int, int], tuple[int, int] | KafkaError],
    ) -> list[tuple[str, Recorded, int]]:
        """Write the outcome of each new client command to the dedup topic, in this transaction."""
        if not recorded:
            return []
        now = time.time()
        event_counts = {i: len(staged) for i, staged in appended}
        delivered: dict[str, tuple[int, int] | KafkaError] = {}
        staged_records: list[tuple[str, Recorded]] = []
        for i in recorded:
            cmd = commands[i]
            outcome = outcomes[i]
            if isinstance(outcome, Rejected):
                rec = Recorded(at=now, code=outcome.code, reason=outcome.reason)
            else:
                rec = Recorded(at=now, positions=tuple(positions[(i, j)] for j in range(event_counts[i])))  # type: ignore[misc]
            producer.produce(
                self.dedup_topic, key=cmd.command_id.encode(), value=rec.encode(), partition=p,
                on_delivery=partial(_record_position, delivered, cmd.command_id),
            )  # fmt: skip
            staged_records.append((cmd.command_id, rec))
        self._flush(producer)
        rows: list[tuple[str, Recorded, int]] = []
        for cid, rec in staged_records:
            where = delivered[cid]
            if isinstance(where, KafkaError):
                raise KafkaException(where)
            rows.append((cid, rec, where[1]))
        return rows

    def _index_outcomes(self, p: int, rows: list[tuple[str, Recorded, int]]) -> None:
        """After the commit: put the recorded outcomes into the local index (a cache of the topic)."""
        if not rows:
            return
        try:
            self.dedup.add(p, [(cid, rec) for cid, rec, _ in rows], max(o for _, _, o in rows) + 1)
        except Exception:
            # Committed in Kafka all the same: the next lookup catches the index up from the topic.
            log.exception("%s could not update its dedup index; it will catch up from the topic", self.stage)
            self.dedup_stale = True

    def _refresh_dedup(self) -> None:
        consumer = self._consumer()
        try:
            self.dedup.catch_up(read_to_end(consumer, self.dedup_topic, self.dedup.starts()))
            self.dedup_stale = False
        finally:
            consumer.close()

    def _fetch_events(self, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], StoredEvent]:
        """Read back events by (partition, offset): the original events of a duplicate."""
        if not wanted:
            return {}
        if self.reader is None:
            self.reader = self._consumer()
        found: dict[tuple[int, int], StoredEvent] = {}
        by_partition: dict[int, set[int]] = defaultdict(set)
        for p, offset in wanted:
            by_partition[p].add(offset)
        for p, offsets in by_partition.items():
            last = max(offsets)
            for msg in read_to_end(self.reader, self.events_topic, {p: min(offsets)}):
                _, offset = position(msg)
                if offset in offsets:
                    found[(p, offset)] = self.registry.decode_event(
                        msg.value(), self.events_topic, p, offset, msg.timestamp()[1]
                    )
                if offset >= last:
                    self.reader.unassign()
                    break
        return found

    # ---- commands from the command topic (sent by policies) -------------------------

    @property
    def commands_group(self) -> str:
        """The consumer group whose offsets record what the service's shards consumed."""
        return shard_group(self.config.namespace, self.config.service)

    def open_command_stream(self) -> Consumer:
        """Assign this shard's command partitions at their committed offsets."""
        group = self.commands_group
        consumer = Consumer(consumer_config(self.config.kafka, group))
        # A broken partition's commands stay in the topic until the partition can be served.
        served = sorted(self.owned - set(self.broken))
        assign_committed(consumer, self.config.kafka, group, [TopicPartition(self.commands_topic, p) for p in served])
        self.command_consumer = consumer
        return consumer

    def process_messages(self, msgs: list[Message], group_metadata: Any) -> list[Outcome]:
        """Decide consumed command messages; events, dead letters and offsets commit together."""
        commands: list[Command] = []
        sources: list[Message] = []
        letters: list[DeadLetter] = []
        next_offsets: dict[int, int] = {}
        for msg in data_messages(msgs):
            p, offset = position(msg)
            next_offsets[p] = offset + 1
            try:
                commands.append(self.registry.decode_command(msg.value()))
                sources.append(msg)
            except (DecodeError, ValueError) as exc:
                letters.append(dead_letter_from(msg, self.stage, str(exc)))
        if not next_offsets:
            return []
        offsets = [TopicPartition(self.commands_topic, p, o) for p, o in next_offsets.items()]
        return self._transact(Batch(commands, sources, offsets, group_metadata, letters))

    def redrive(self, command: Command, source: Any, marks: list[tuple[str, bytes, bytes]]) -> Outcome:
        """Decide a parked command-topic command afresh, as of now, in one transaction with its
        done marks; a rejection is dead-lettered again (from `source`, a Message-like)."""
        return self._transact(Batch([command], sources=[source], marks=marks))[0]

    def due_commands(self, now: datetime | None = None) -> list[Command]:
        return self.core.due_commands(now)

    def fire_deadlines(self) -> list[Outcome]:
        """Expire overdue aggregates. Exactly once: the shard is the single writer, the expiry
        is decided against current state, and its command id is deterministic."""
        commands = self.due_commands()
        return self._transact(Batch(commands)) if commands else []

    # ---- snapshots ---------------------------------------------------------------

    def _maybe_snapshot(self, force: bool = False) -> int:
        return sum(self._snapshot(p) for p in self.core.snapshots_due(self.config.snapshot_every, force))

    def _snapshot(self, p: int) -> int:
        """Write partition `p`'s snapshot: its changed aggregates, then the checkpoint."""
        producer = self.producers[p]  # each partition's snapshot commits with its own producer
        producer.begin_transaction()
        records = self.core.snapshot_records(p)
        delivered: dict[str, tuple[int, int] | KafkaError] = {}
        for key, value in records[:-1]:
            producer.produce(self.snapshots_topic, key=key, value=value, partition=p)
        key, value = records[-1]  # the checkpoint: the aggregate store reads the topic on after it
        producer.produce(
            self.snapshots_topic, key=key, value=value, partition=p,
            on_delivery=partial(_record_position, delivered, "checkpoint"),
        )  # fmt: skip
        self._flush(producer)
        checkpoint = delivered["checkpoint"]
        if isinstance(checkpoint, KafkaError):
            raise KafkaException(checkpoint)
        with self.watchdog.bound(f"commit_transaction of {self.config.transactional_id(p)}", TXN_OP_S):
            producer.commit_transaction(TXN_OP_S)
        self.transactions += 1
        self.core.snapshotted(p, checkpoint[1] + 1)
        return len(records) - 1  # the checkpoint is not an aggregate

    def snapshot_now(self) -> int:
        return self._maybe_snapshot(force=True)

    # ---- reads -------------------------------------------------------------------

    def state(self, aggregate_id: str) -> tuple[DomainModel, int]:
        return self.core.state(aggregate_id)

    def _flush(self, producer: Producer) -> None:
        """Deliver everything produced so far, or raise a timeout (which restarts the shard)."""
        with self.watchdog.bound("flush", TXN_OP_S):
            left = producer.flush(TXN_OP_S)
        if left:
            why = write_outage(self.config.kafka) or "the brokers answer, but did not acknowledge in time"
            late = f"{left} writes not acknowledged by Kafka within {TXN_OP_S:g}s: {why}"
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, late))

    def close(self) -> None:
        for consumer in (self.command_consumer, self.reader):
            if consumer is not None:
                consumer.close()
        for producer in self.producers.values():
            producer.flush(10)
        if self.completer is not None:
            self.completer.shutdown()
        self.dedup.close()
        self.core.close()
        if self.live is not None:
            self.live.close()


def _record_position(
    positions: dict[Any, tuple[int, int] | KafkaError],
    slot: object,
    err: KafkaError | None,
    msg: Message,
) -> None:
    # Delivery callbacks must not raise; the error is re-raised after flush().
    positions[slot] = err if err is not None else position(msg)


def _held_back(held_back: dict[tuple[str, int], tuple[int, int]]) -> str:
    return ", ".join(
        f"{t}[{p}] at {stable} (high watermark {high})" for (t, p), (stable, high) in sorted(held_back.items())
    )

"""Streams events from Kafka into one projection's ClickHouse tables, exactly once per table.

Every row carries its event's (topic, partition, offset). On start each table's own maximum is
read back from ClickHouse; the consumer resumes from the lowest of them and each table skips rows
it already holds. Inserts are atomic per table, so no row is lost or written twice.

Parking: an event whose projection raises, or whose rows ClickHouse refuses, is found by bisecting
its batch, retried a few times alone, then dead-lettered (DLQ first, flushed) and recorded in the
table `_parked_<projection>`; later batches skip recorded positions. A crash between the dead
letter and the record re-parks that one event after restart (a duplicate letter, never a loss).

Rebuild: a second runner with `suffix=REBUILD` builds `<table>__rebuild` (and the view targets and
views likewise) from the earliest offset while the live tables keep ingesting and serving; once it
reaches the live positions `promote` swaps the fresh objects in. `promote` commits by creating the
marker table `_swap_<projection>`, then renames; `recover` (run before any runner starts) finishes
a committed swap, so a crash leaves either the old or the new complete set live. A `__rebuild`
set without a marker is an unfinished rebuild: the host resumes it (each fresh table resumes from
its own offsets like any other table)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, TopicPartition

from events.base import StoredEvent
from events.log.kafka_io import consumer_config, data_messages, end_offsets, position
from events.registry import DecodeError, Registry
from projections.base import POSITION_DDL, Projection, Row, Table
from projections.sink import ClickHouseSink

log = logging.getLogger("choreo.projection")

REBUILD = "__rebuild"
OLD = "__old"


@dataclass
class BatchStats:
    events: int = 0
    rows: int = 0
    poison: int = 0
    seconds: float = 0.0


Decoder = Callable[[bytes | None, str, int, int, int], StoredEvent]
"""(value, topic, partition, offset, Kafka timestamp in ms) -> the event."""
PoisonHandler = Callable[[Message, str], None]
"""Called with an undecodable message and the reason (e.g. to send it to the dead-letter topic).
Also called for a parked event; it must raise if the dead letter could not be written."""
Position = tuple[str, int, int]


def parked_table(projection: str) -> Table:
    """Events a projection gave up on, with the error: dead-lettered once, skipped after restarts."""
    return Table(
        name=f"_parked_{projection}",
        columns=("error", "at"),
        ddl=f"""
CREATE TABLE IF NOT EXISTS _parked_{projection} (
    error String, at DateTime64(6, 'UTC'), {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (_topic, _partition, _offset)""",
    )


def _objects(projection: Projection) -> list[str]:
    """Every table a rebuild builds afresh and swaps in together (views are recreated around them)."""
    return [
        *(t.name for t in projection.tables),
        *(v.target.name for v in projection.views),
        parked_table(projection.name).name,
    ]


def _existing(sink: ClickHouseSink) -> dict[str, str]:
    """Table name -> engine, in the current database."""
    rows = sink.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase()")
    return {str(name): str(engine) for name, engine in rows}


def _marker(projection: Projection) -> str:
    return f"_swap_{projection.name}"


def promote(sink: ClickHouseSink, projection: Projection) -> None:
    """Swap a caught-up `__rebuild` set in for the live one. Call with no insert in flight (the
    views are dropped first and recreated by the next `start()`)."""
    for view in projection.views:
        sink.command(f"DROP VIEW IF EXISTS {view.name}{REBUILD}")
        sink.command(f"DROP VIEW IF EXISTS {view.name}")
    for name in _objects(projection):
        sink.command(f"DROP TABLE IF EXISTS {name}{OLD}")
    sink.command(f"CREATE TABLE IF NOT EXISTS {_marker(projection)} (at DateTime) ENGINE = TinyLog")
    _finish_swap(sink, projection)


def _finish_swap(sink: ClickHouseSink, projection: Projection) -> None:
    """Idempotent: every step is decided by which tables exist, so it may be rerun after a crash."""
    tables = _existing(sink)
    for name in _objects(projection):
        fresh = name + REBUILD
        if fresh in tables:
            if name in tables:
                sink.command(f"RENAME TABLE {name} TO {name}{OLD}, {fresh} TO {name}")
            else:
                sink.command(f"RENAME TABLE {fresh} TO {name}")
    tables = _existing(sink)
    for name in _objects(projection):
        if name + OLD in tables:
            sink.command(f"DROP TABLE {name}{OLD}")
    sink.command(f"DROP TABLE IF EXISTS {_marker(projection)}")


def recover(sink: ClickHouseSink, projection: Projection) -> bool:
    """Bring the projection's tables to a consistent state before any runner starts. Returns
    whether an unfinished rebuild is waiting to be resumed."""
    tables = _existing(sink)
    for view in projection.views:
        if tables.get(view.target.name) == "MaterializedView":
            # Before views wrote `TO` a target table, the target name was the view itself: replay
            # from scratch. Sources go first, so a crash here finds the old view again and redoes it.
            log.warning("projection %s: replacing the view %s by a target table", projection.name, view.target.name)
            for table in projection.tables:
                sink.command(f"DROP TABLE IF EXISTS {table.name}")
            sink.command(f"DROP TABLE IF EXISTS {parked_table(projection.name).name}")
            sink.command(f"DROP VIEW IF EXISTS {view.target.name}")
    if _marker(projection) in tables:
        log.warning("projection %s: finishing a swap interrupted by a crash", projection.name)
        _finish_swap(sink, projection)
    tables = _existing(sink)
    for name in _objects(projection):
        if name + OLD in tables:
            sink.command(f"DROP TABLE {name}{OLD}")
    return any(name + REBUILD in tables for name in _objects(projection))


def discard_rebuild(sink: ClickHouseSink, projection: Projection) -> None:
    for view in projection.views:
        sink.command(f"DROP VIEW IF EXISTS {view.name}{REBUILD}")
    for name in _objects(projection):
        sink.command(f"DROP TABLE IF EXISTS {name}{REBUILD}")


class ProjectionRunner:
    def __init__(
        self,
        projection: Projection,
        sink: ClickHouseSink,
        kafka: dict[str, str],
        registry: Registry,
        *,
        group_id: str,
        topics: Sequence[str] | None = None,
        topic_prefix: str = "",
        batch_size: int = 50_000,
        flush_interval_ms: int = 200,
        on_poison: PoisonHandler | None = None,
        on_park: PoisonHandler | None = None,
        decode: Decoder | None = None,
        suffix: str = "",
        retries: int = 2,
    ) -> None:
        projection.suffix = suffix
        self.projection = projection
        self.sink = sink
        self.kafka = kafka
        self.registry = registry
        self.group_id = group_id
        self.topics = [f"{topic_prefix}{t}" for t in (topics or projection.topics)]
        self.batch_size = batch_size
        self.flush_interval = flush_interval_ms / 1000
        self.on_poison = on_poison
        self.on_park = on_park
        self.decode = decode or registry.decode_event
        self.suffix = suffix
        self.retries = retries
        self.tables = [(t.name, t.renamed(suffix)) for t in projection.tables]
        self.parked_table = parked_table(projection.name).renamed(suffix)
        self.parked: set[Position] = set()
        self.dead_lettered: set[Position] = set()
        self.table_max: dict[str, dict[tuple[str, int], int]] = {}
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.consumer: Consumer | None = None
        self.totals = BatchStats()

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for _, table in self.tables:
            self.sink.create(table)
            self.table_max[table.name] = self.sink.max_offsets(table)
        for view in self.projection.views:
            self.sink.create(view.target.renamed(self.suffix))
        if self.suffix:  # a fresh set holds every object, so a swap replaces each of them
            self.sink.create(self.parked_table)
        for view in self.projection.views:
            self.sink.command(view.ddl(self.suffix))
        self.parked = self._parked_positions(self.parked_table.name)
        if self.suffix:
            # Events the live tables parked are in the DLQ already: record them, do not resend.
            self.dead_lettered = self._parked_positions(parked_table(self.projection.name).name)
        self.consumer = Consumer(consumer_config(self.kafka, self.group_id))
        ends = end_offsets(self.consumer, self.topics)
        ahead = [
            f"{t}[{p}] holds offset {o}, log ends at {ends.get((t, p), 0)}"
            for stored in self.table_max.values()
            for (t, p), o in stored.items()
            if (t, p) in ends and o >= ends[(t, p)]
        ]
        if ahead:
            # The tables describe a different log (the event store was reset or replaced): the
            # log is the source of truth, so the read model is rebuilt from it.
            log.warning("projection %s is ahead of its log (%s); rebuilding", self.projection.name, ahead[0])
            self.stop()
            self._drop()
            self.table_max = {t.name: {} for _, t in self.tables}
            self.start()
            return
        assignment = []
        for topic in self.topics:
            meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
            for p in sorted(meta.partitions):
                stored = [m.get((topic, p), -1) for m in self.table_max.values()]
                start = min(stored) + 1
                self.next_offsets[(topic, p)] = start
                assignment.append(TopicPartition(topic, p, start))
        self.consumer.assign(assignment)
        log.info("projection %s resumes at %s", self.projection.name, self.next_offsets)

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def _parked_positions(self, table: str) -> set[Position]:
        if table not in _existing(self.sink):
            return set()
        rows = self.sink.rows(f"SELECT _topic, _partition, _offset FROM {table}")
        return {(str(t), int(p), int(o)) for t, p, o in rows}

    def _drop(self) -> None:
        # The source tables go last: they are what `start()` finds ahead of the log after a crash.
        for view in self.projection.views:
            self.sink.command(f"DROP VIEW IF EXISTS {view.name}{self.suffix}")
        for view in self.projection.views:
            self.sink.drop(view.target.renamed(self.suffix))
        self.sink.drop(self.parked_table)
        for _, table in self.tables:
            self.sink.drop(table)
        self.projection.reset()

    def caught_up_with(self, positions: dict[tuple[str, int], int]) -> bool:
        return all(self.next_offsets.get(k, 0) >= v for k, v in positions.items())

    # ---- streaming ---------------------------------------------------------------

    def poll_batch(self, max_wait: float | None = None) -> BatchStats:
        """Consume up to batch_size events (or what arrives within the flush interval) and insert."""
        assert self.consumer is not None, "call start() first"
        started = time.perf_counter()
        deadline = started + (self.flush_interval if max_wait is None else max_wait)
        events: list[StoredEvent] = []
        raw: dict[Position, Message] = {}
        consumed: dict[tuple[str, int], int] = {}
        stats = BatchStats()
        while len(events) < self.batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            msgs = self.consumer.consume(num_messages=min(10_000, self.batch_size - len(events)), timeout=remaining)
            for msg in data_messages(msgs):
                topic = msg.topic() or ""
                p, offset = position(msg)
                consumed[(topic, p)] = offset + 1
                if (topic, p, offset) in self.parked:
                    continue
                try:
                    events.append(self.decode(msg.value(), topic, p, offset, msg.timestamp()[1]))
                    raw[(topic, p, offset)] = msg
                except DecodeError as exc:
                    stats.poison += 1
                    log.error("poison event %s[%d]@%d: %s", topic, p, offset, exc)
                    if self.on_poison is not None:
                        self.on_poison(msg, str(exc))
        if events:
            stats.events = len(events)
            try:
                stats.rows = self._write(events)
            except Exception:  # any failure: find the event and park it
                self.projection.reset()
                stats.rows = self._write_isolating(events, raw)
        self.next_offsets.update(consumed)
        if consumed:
            # Informational only (for `choreo lag` and Kafka tooling): ClickHouse holds the truth.
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in consumed.items()], asynchronous=True)
        stats.seconds = time.perf_counter() - started
        self.totals.events += stats.events
        self.totals.rows += stats.rows
        self.totals.poison += stats.poison
        return stats

    def _write_isolating(self, events: list[StoredEvent], raw: dict[Position, Message]) -> int:
        """Bisect a failing batch down to the events that fail alone; retry those, then park them.
        A failed attempt may have filled some tables: their offsets skip those rows next time."""
        if len(events) > 1:
            try:
                return self._write(events)
            except Exception:
                self.projection.reset()
                mid = len(events) // 2
                return self._write_isolating(events[:mid], raw) + self._write_isolating(events[mid:], raw)
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return self._write(events)
            except Exception as exc:
                self.projection.reset()
                error = exc
                time.sleep(0.05 * 2**attempt)
        assert error is not None
        self._park(events[0], raw, error)
        return 0

    def _park(self, event: StoredEvent, raw: dict[Position, Message], error: Exception) -> None:
        try:
            self.sink.query("SELECT 1")
        except Exception as down:  # ClickHouse itself is failing: crash and retry, park nothing
            raise error from down
        pos = (event.topic, event.partition, event.offset)
        reason = f"{type(error).__name__}: {error}"[:4000]
        log.error("projection %s parks %s[%d]@%d: %s", self.projection.name, *pos, reason)
        if self.on_park is not None and pos not in self.dead_lettered:
            self.on_park(raw[pos], reason)
        self.sink.create(self.parked_table)  # created on first use: most projections never park
        self.sink.insert(self.parked_table, [(reason, datetime.now(UTC), *pos)])
        self.parked.add(pos)

    def _write(self, events: list[StoredEvent]) -> int:
        rows_by_table = self.projection.project(events, self.sink.rows)
        written = 0
        for logical, table in self.tables:
            done = self.table_max[table.name]
            fresh: list[Row] = []
            top: dict[tuple[str, int], int] = {}
            for row in rows_by_table.get(logical, []):
                key, offset = (row[-3], row[-2]), row[-1]
                if offset > done.get(key, -1):
                    fresh.append(row)
                    if offset > top.get(key, -1):
                        top[key] = offset
            self.sink.insert(table, fresh)
            done.update(top)
            written += len(fresh)
        return written

    def positions(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition): everything below is in ClickHouse."""
        return dict(self.next_offsets)

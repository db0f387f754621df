"""Streams events from Kafka into one projection's ClickHouse tables, exactly once per table.

Every row carries its event's (topic, partition, offset). On start each table's own maximum is
read back from ClickHouse; the consumer resumes from the lowest of them and each table skips rows
it already holds. Inserts are atomic per table, so no row is lost or written twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from actors.shard import position
from choreography.kafka_io import consumer_config, data_messages, end_offsets
from events.base import StoredEvent
from events.registry import DecodeError, Registry
from projections.base import Projection, Row
from projections.sink import ClickHouseSink

log = logging.getLogger("choreo.projection")


@dataclass
class BatchStats:
    events: int = 0
    rows: int = 0
    poison: int = 0
    seconds: float = 0.0


Decoder = Callable[[bytes | None, str, int, int], StoredEvent]
PoisonHandler = Callable[[Message, str], None]
"""Called with an undecodable message and the reason (e.g. to send it to the dead-letter topic)."""


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
        decode: Decoder | None = None,
    ) -> None:
        self.projection = projection
        self.sink = sink
        self.kafka = kafka
        self.registry = registry
        self.group_id = group_id
        self.topics = [f"{topic_prefix}{t}" for t in (topics or projection.topics)]
        self.batch_size = batch_size
        self.flush_interval = flush_interval_ms / 1000
        self.on_poison = on_poison
        self.decode = decode or registry.decode_event
        self.table_max: dict[str, dict[tuple[str, int], int]] = {}
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.consumer: Consumer | None = None
        self.totals = BatchStats()

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for table in self.projection.tables:
            self.sink.create(table)
            self.table_max[table.name] = self.sink.max_offsets(table)
        for view in self.projection.views:
            self.sink.command(view.ddl)
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
            self.table_max = {t.name: {} for t in self.projection.tables}
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

    def _drop(self) -> None:
        for view in self.projection.views:
            self.sink.command(f"DROP VIEW IF EXISTS {view.name}")
        for table in self.projection.tables:
            self.sink.drop(table)
        self.projection.reset()

    def rebuild(self) -> None:
        """Drop the tables and replay from the earliest offset (runbook Case 1)."""
        self.stop()
        self._drop()
        self.table_max.clear()
        self.start()

    # ---- streaming ---------------------------------------------------------------

    def poll_batch(self, max_wait: float | None = None) -> BatchStats:
        """Consume up to batch_size events (or what arrives within the flush interval) and insert."""
        assert self.consumer is not None, "call start() first"
        started = time.perf_counter()
        deadline = started + (self.flush_interval if max_wait is None else max_wait)
        events: list[StoredEvent] = []
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
                try:
                    events.append(self.decode(msg.value(), topic, p, offset))
                except DecodeError as exc:
                    stats.poison += 1
                    log.error("poison event %s[%d]@%d: %s", topic, p, offset, exc)
                    if self.on_poison is not None:
                        self.on_poison(msg, str(exc))
        if events:
            stats.events = len(events)
            stats.rows = self._write(events)
        self.next_offsets.update(consumed)
        if consumed:
            # Informational only (for `choreo lag` and Kafka tooling): ClickHouse holds the truth.
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in consumed.items()], asynchronous=True)
        stats.seconds = time.perf_counter() - started
        self.totals.events += stats.events
        self.totals.rows += stats.rows
        self.totals.poison += stats.poison
        return stats

    def _write(self, events: list[StoredEvent]) -> int:
        rows_by_table = self.projection.project(events, self.sink.rows)
        written = 0
        for table in self.projection.tables:
            done = self.table_max[table.name]
            fresh: list[Row] = []
            top: dict[tuple[str, int], int] = {}
            for row in rows_by_table.get(table.name, []):
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

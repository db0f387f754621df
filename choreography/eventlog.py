"""Reading the event store straight from Kafka: whole topics for audits, one aggregate for history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, TopicPartition

from choreography.kafka_io import consumer_config
from events import default_registry
from events.base import StoredEvent
from events.registry import DecodeError, Registry


def read_topic(
    kafka: dict[str, str],
    topic: str,
    partitions: list[int] | None = None,
    registry: Registry | None = None,
    skip_undecodable: bool = False,
    key: bytes | None = None,
    key_prefix: bytes | None = None,
) -> Iterator[StoredEvent]:
    """Every committed event of `topic` (or of some partitions), decoded, oldest first per partition."""
    registry = registry or default_registry()
    consumer = Consumer(consumer_config(kafka, f"choreo-reader-{uuid.uuid4().hex}", **{"enable.partition.eof": True}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        wanted = sorted(meta.partitions) if partitions is None else partitions
        todo: set[int] = set()
        assignment = []
        for p in wanted:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                todo.add(p)
                assignment.append(TopicPartition(topic, p, low))
        if not todo:
            return
        consumer.assign(assignment)
        while todo:
            for msg in consumer.consume(10_000, timeout=1.0):
                err = msg.error()
                p, offset = msg.partition() or 0, msg.offset() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)
                    continue
                if key is not None and msg.key() != key:
                    continue
                if key_prefix is not None and not (msg.key() or b"").startswith(key_prefix):
                    continue
                try:
                    yield registry.decode_event(msg.value(), topic, p, offset)
                except DecodeError:
                    if not skip_undecodable:
                        raise
    finally:
        consumer.close()

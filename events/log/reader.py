"""Reading the event store straight from Kafka: whole topics for audits, one aggregate for history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer

from events.base import StoredEvent
from events.log.kafka_io import consumer_config, partitions_of, read_to_end
from events.registry import DecodeError, Registry


def read_topic(
    kafka: dict[str, str],
    topic: str,
    registry: Registry,
    partitions: list[int] | None = None,
    skip_undecodable: bool = False,
    key: bytes | None = None,
    key_prefix: bytes | None = None,
) -> Iterator[StoredEvent]:
    """Every committed event of `topic` (or of some partitions), decoded, oldest first per partition."""
    consumer = Consumer(consumer_config(kafka, f"choreo-reader-{uuid.uuid4().hex}", **{"enable.partition.eof": True}))
    try:
        wanted = partitions_of(consumer, topic) if partitions is None else partitions
        for msg in read_to_end(consumer, topic, dict.fromkeys(wanted, 0)):
            if key is not None and msg.key() != key:
                continue
            if key_prefix is not None and not (msg.key() or b"").startswith(key_prefix):
                continue
            try:
                yield registry.decode_event(
                    msg.value(), topic, msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1]
                )
            except DecodeError:
                if not skip_undecodable:
                    raise
    finally:
        consumer.close()

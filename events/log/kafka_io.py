"""librdkafka client settings used on Choreo's hot paths (transactional producers, batch consumers)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from events.log.secrets import resolve
from events.registry import TYPE_HEADER

TXN_OP_S = 15.0
"""Longest wait for one step of a transaction (flush, offsets, commit). A step that takes longer
(the broker died mid-transaction) restarts the actor, which fences and aborts it: quicker than
waiting out the transaction, and never a permanent state."""


def producer_config(base: dict[str, str], transactional_id: str | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        **resolve(base),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "lz4",
        "message.max.bytes": 16_000_000,
        "reconnect.backoff.max.ms": 1000,
        "log_level": 3,
    }
    if transactional_id:
        cfg["transactional.id"] = transactional_id
        cfg["transaction.timeout.ms"] = 60_000
    return cfg


def consume_ready(consumer: Consumer, max_messages: int, wait_s: float) -> list[Message]:
    """Wait up to `wait_s` for a first message, then take what has arrived already, up to
    `max_messages`, without waiting for more. `consume(n, t)` alone waits out `t` unless `n`
    messages come: on every hop of a saga at low load. Here a quiet stream adds no wait, and a busy
    one still batches: a batch is whatever queued up while the previous one was processed."""
    first = consumer.consume(num_messages=1, timeout=wait_s)
    if not first or max_messages <= 1:
        return first
    return first + consumer.consume(num_messages=max_messages - 1, timeout=0)


def consumer_config(base: dict[str, str], group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **resolve(base),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 16_777_216,
        "fetch.wait.max.ms": 50,
        "queued.max.messages.kbytes": 262_144,
        "reconnect.backoff.max.ms": 1000,
        "log_level": 3,
        **extra,
    }


def admin_config(base: dict[str, str], log_level: int = 0) -> dict[str, Any]:
    return {**resolve(base), "log_level": log_level}


def _accepts_connections(address: str, timeout: float) -> bool:
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def write_outage(kafka: dict[str, str], timeout: float = 3.0) -> str | None:
    """Why Kafka may take no writes now (brokers that accept no connections, partitions without a
    leader), for error messages; None when every broker it knows of answers."""
    known = {a.strip() for a in kafka.get("bootstrap.servers", "").split(",") if a.strip()}
    leaderless = 0
    try:
        metadata = AdminClient(admin_config(kafka)).list_topics(timeout=timeout)
        known |= {f"{b.host}:{b.port}" for b in metadata.brokers.values()}
        leaderless = sum(p.leader < 0 for t in metadata.topics.values() for p in t.partitions.values())
    except KafkaException:
        return "no Kafka broker answers"
    down = sorted(a for a in known if not _accepts_connections(a, timeout))
    if not down and not leaderless:
        return None
    return (
        f"{len(known) - len(down)} of {len(known)} Kafka brokers reachable"
        + (f" (down: {', '.join(down)})" if down else "")
        + (f", {leaderless} partitions without a leader" if leaderless else "")
        + "; a topic takes writes only while min.insync.replicas of its replicas are in sync"
    )


def data_messages(msgs: list[Message]) -> Iterator[Message]:
    """The messages that carry data: end-of-partition notices are skipped, other errors raised."""
    for msg in msgs:
        err = msg.error()
        if err is None:
            yield msg
        elif err.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(err)


TRANSIENT_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def is_transient(err: KafkaError) -> bool:
    """An error that goes away once a leader is elected or a broker is back."""
    return bool(err.retriable()) or err.code() in TRANSIENT_CODES


def watermarks(consumer: Consumer, topic: str, partition: int, timeout: float = 30) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying the retriable errors of a partition whose
    leader is still being elected (a new topic, a broker that just restarted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return low, high
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and is_transient(err)) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_to_end(
    consumer: Consumer, topic: str, starts: dict[int, int], held_back: dict[int, tuple[int, int]] | None = None
) -> Iterator[Message]:
    """Yield the committed messages of the given partitions from `starts` to their current end
    (the consumer needs `enable.partition.eof`). A read_committed consumer ends at a partition's
    last stable offset: where a transaction is still open, committed messages after it are not
    read. `held_back` collects those partitions as {partition: (last stable offset, high watermark)}."""
    todo = set()
    assignment = []
    for p, start in starts.items():
        _, high = watermarks(consumer, topic, p)
        if high > start:
            todo.add(p)
            assignment.append(TopicPartition(topic, p, start if start > 0 else OFFSET_BEGINNING))
    if not todo:
        return
    consumer.assign(assignment)
    while todo:
        # A short timeout: consume() waits it out whenever fewer messages than asked are left
        # (at the end of a partition), and a fetch there waits fetch.wait.max.ms (50) anyway.
        for msg in consumer.consume(num_messages=10_000, timeout=0.05):
            err = msg.error()
            if err is None:
                yield msg
            elif err.code() == KafkaError._PARTITION_EOF:
                p, end = msg.partition() or 0, msg.offset() or 0
                todo.discard(p)
                if held_back is not None:
                    # The fetch's own high watermark (a read_committed offset query returns the LSO).
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                    if end < high:
                        held_back[p] = (end, high)
            else:
                raise KafkaException(err)
    consumer.unassign()


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10) -> list[int]:
    """The partitions of `topic`, or none when it does not exist."""
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    return [] if meta is None or meta.error is not None else sorted(meta.partitions)


def end_offsets(consumer: Consumer, topics: list[str], timeout: float = 30) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of `topics`."""
    ends = {}
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        for p in meta.partitions:
            ends[(topic, p)] = watermarks(consumer, topic, p, timeout)[1]
    return ends


def is_fatal(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (
        err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    )


def is_abortable(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.txn_requires_abort()


def position(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed or delivered message."""
    p, offset = msg.partition(), msg.offset()
    assert p is not None and offset is not None
    return p, offset


def event_type(msg: Message) -> str | None:
    """The event type a message's type header names, or None without one (no decoding)."""
    kind = dict(msg.headers() or []).get(TYPE_HEADER)
    return kind.decode(errors="replace") if isinstance(kind, bytes) else kind


def assign_committed(consumer: Consumer, kafka: dict[str, str], group: str, partitions: list[TopicPartition]) -> None:
    """Assign `partitions` at the group's last *stable* committed offsets (see `committed_starts`)."""
    consumer.assign(committed_starts(kafka, group, partitions))


def committed_starts(kafka: dict[str, str], group: str, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """`partitions` at the group's last *stable* committed offsets (the beginning where none).

    Call it after `init_transactions` of every producer that commits offsets for these partitions:
    that aborted whatever transaction of theirs was open, so no offset commit of ours is pending.
    A plain `assign` fetches offsets with require_stable, and after a broker crash the group
    coordinator can report an offset commit of a transaction it no longer knows as pending for
    minutes (UNSTABLE_OFFSET_COMMIT); librdkafka then waits, and consumes nothing meanwhile."""
    if not partitions:
        return []
    admin = AdminClient(admin_config(kafka))
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(tp.topic, tp.partition) for tp in partitions])]
    deadline = time.monotonic() + 30
    while True:
        try:
            result = admin.list_consumer_group_offsets(request, require_stable=False, request_timeout=30)[
                group
            ].result()
            break
        except KafkaException as exc:  # a coordinator still loading its offsets after a (re)start
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.retriable()) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    committed = {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or []}
    starts = [committed.get((tp.topic, tp.partition), -1) for tp in partitions]
    return [
        TopicPartition(tp.topic, tp.partition, start if start >= 0 else OFFSET_BEGINNING)
        for tp, start in zip(partitions, starts, strict=True)
    ]

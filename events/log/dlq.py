"""Dead letters: messages that cannot be decoded or handled, with the reason and their origin."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer

from events.log.kafka_io import consumer_config, partitions_of, read_to_end


@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    stage: str
    """Who gave up: e.g. `shard order-0`, `policy inventory-0`, `projection orders`."""
    error: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    at: float = 0.0
    dlq_offset: int = -1
    dlq_partition: int = 0

    @property
    def letter_id(self) -> str:
        """The letter's identity in the dead-letter topic: `<dlq partition>:<dlq offset>`."""
        return f"{self.dlq_partition}:{self.dlq_offset}"

    @property
    def kind(self) -> str:
        """The stage's kind: `policy`, `shard` or `projection`."""
        return self.stage.split(" ", 1)[0]

    @property
    def stage_target(self) -> str:
        """What follows the kind in the stage: `inventory-0`, `choreo-order-shard-1`, `orders`."""
        return self.stage.split(" ", 1)[1] if " " in self.stage else ""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "source_topic": self.source_topic,
                "partition": self.partition,
                "offset": self.offset,
                "stage": self.stage,
                "error": self.error,
                "key": _b64(self.key),
                "value": _b64(self.value),
                "headers": [[k, _b64(v)] for k, v in self.headers],
                "at": self.at or time.time(),
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes, dlq_offset: int, dlq_partition: int = 0) -> DeadLetter:
        d = json.loads(raw)
        return cls(
            source_topic=d["source_topic"], partition=d["partition"], offset=d["offset"],
            stage=d["stage"], error=d["error"], key=_unb64(d["key"]), value=_unb64(d["value"]),
            headers=[(k, _unb64(v) or b"") for k, v in d["headers"]], at=d["at"], dlq_offset=dlq_offset,
            dlq_partition=dlq_partition,
        )  # fmt: skip


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(data: str | None) -> bytes | None:
    return None if data is None else base64.b64decode(data)


def dead_letter_from(msg: Any, stage: str, error: str) -> DeadLetter:
    headers = [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in (msg.headers() or [])]
    return DeadLetter(
        source_topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0,
        stage=stage, error=error, key=msg.key(), value=msg.value(), headers=headers,
    )  # fmt: skip


def send_dead_letter(producer: Producer, topic: str, letter: DeadLetter) -> None:
    key = f"{letter.source_topic}:{letter.partition}:{letter.offset}".encode()
    producer.produce(topic, key=key, value=letter.encode())


def read_dead_letters(kafka: dict[str, str], topic: str, start: int = 0) -> list[DeadLetter]:
    consumer = Consumer(consumer_config(kafka, f"dlq-reader-{uuid.uuid4().hex}", **{"enable.partition.eof": True}))
    try:
        starts = dict.fromkeys(partitions_of(consumer, topic), start)
        return [
            DeadLetter.decode(msg.value() or b"{}", msg.offset() or 0, msg.partition() or 0)
            for msg in read_to_end(consumer, topic, starts)
        ]
    finally:
        consumer.close()


class LetterMessage:
    """A parked message seen as the consumed message it was (for stages that take a Message)."""

    def __init__(self, letter: DeadLetter) -> None:
        self.letter = letter

    def topic(self) -> str:
        return self.letter.source_topic

    def partition(self) -> int:
        return self.letter.partition

    def offset(self) -> int:
        return self.letter.offset

    def key(self) -> bytes | None:
        return self.letter.key

    def value(self) -> bytes | None:
        return self.letter.value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self.letter.headers)

    def error(self) -> None:
        return None

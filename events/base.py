"""Base classes for domain events and commands, and the envelope every stored event carries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


def new_id() -> str:
    """A fresh random identifier: 128 random bits as hex."""
    return os.urandom(16).hex()


def utc_now() -> datetime:
    return datetime.now(UTC)


class DomainModel(BaseModel):
    """Frozen pydantic model that rejects unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(DomainModel):
    """A fact, named in the past tense. Only the payload; the envelope is separate."""

    schema_version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = ""

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


class Command(DomainModel):
    """An intent, named in the imperative. `target` names the service that handles it."""

    target: ClassVar[str] = ""
    command_id: str = Field(default_factory=new_id, min_length=1)
    correlation_id: str | None = None
    causation_id: str | None = None

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @property
    def aggregate_id(self) -> str:
        raise NotImplementedError


class Envelope(DomainModel):
    """Metadata stored with every event."""

    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    version: int = Field(ge=1)
    occurred_at: datetime
    correlation_id: str
    causation_id: str
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as it sits in the log: envelope, payload and its Kafka position.

    A plain dataclass, not a model: its parts are validated already, and hot paths build
    hundreds of thousands of them per second."""

    envelope: Envelope
    payload: Event
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = 0
    """The Kafka record's timestamp: when the shard took the command that made the event (0 where
    the reader did not say). With `occurred_at` (the decision) it times each hop of a saga."""

    @property
    def version(self) -> int:
        return self.envelope.version

    @property
    def aggregate_id(self) -> str:
        return self.envelope.aggregate_id

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.envelope.event_type,
            "aggregate_id": self.envelope.aggregate_id,
            "version": self.envelope.version,
            "partition": self.partition,
            "offset": self.offset,
        }

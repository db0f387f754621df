"""Type registry, upcasters and the JSON wire codec for events and commands."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from events.base import Command, Envelope, Event, StoredEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

TYPE_HEADER = "choreo.type"
VERSION_HEADER = "choreo.schema_version"


class DecodeError(ValueError):
    """A stored message could not be decoded or upcast into a known type."""


class InvalidCommand(ValueError):
    """A command failed validation; the message says which field and why."""


@dataclass(frozen=True)
class Messages:
    """One service's message types, as its `messages:` entry in cluster.yaml names them: the events
    it stores, the commands it handles, and the upcasters of its events' older schema versions,
    keyed by (event type, version they lift from)."""

    events: tuple[type[Event], ...]
    commands: tuple[type[Command], ...]
    upcasters: Mapping[tuple[str, int], Upcaster] = field(default_factory=dict)

    def problems(self, service: str) -> list[str]:
        """What makes this bundle unfit for `service`: types of another service, or upcasters
        of events it does not hold."""
        found = [
            f"event {e.type_name()} has aggregate_type {e.aggregate_type!r}, not {service!r}"
            for e in self.events
            if e.aggregate_type != service
        ]
        found += [
            f"command {c.type_name()} has target {c.target!r}, not {service!r}"
            for c in self.commands
            if c.target != service
        ]
        names = {e.type_name() for e in self.events}
        found += [f"upcaster of unknown event {name!r}" for name, _ in self.upcasters if name not in names]
        return found


class Registry:
    """Maps type names to classes and applies upcasters (vN -> vN+1) on read."""

    @classmethod
    def of(cls, *bundles: Messages) -> Registry:
        """The registry of every given service's messages. Type names must be unique."""
        names = [e.type_name() for b in bundles for e in b.events] + [
            c.type_name() for b in bundles for c in b.commands
        ]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"message types declared more than once: {', '.join(twice)}")
        registry = cls(events=[e for b in bundles for e in b.events], commands=[c for b in bundles for c in b.commands])
        for bundle in bundles:
            for (name, version), fn in bundle.upcasters.items():
                registry.add_upcaster(name, version, fn)
        return registry

    def __init__(
        self,
        events: Iterable[type[Event]] = (),
        commands: Iterable[type[Command]] = (),
    ) -> None:
        self.events: dict[str, type[Event]] = {e.type_name(): e for e in events}
        self.commands: dict[str, type[Command]] = {c.type_name(): c for c in commands}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._records: dict[type[Event], type[BaseModel]] = {}

    def add_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        self._upcasters[(event_type, from_version)] = fn

    def has_upcaster(self, event_type: str, from_version: int) -> bool:
        """Whether `event_type` payloads of `from_version` can be upcast to `from_version + 1`."""
        return (event_type, from_version) in self._upcasters

    def event_class(self, name: str) -> type[Event]:
        try:
            return self.events[name]
        except KeyError:
            raise DecodeError(f"unknown event type {name!r}") from None

    def command_class(self, name: str) -> type[Command]:
        try:
            return self.commands[name]
        except KeyError:
            known = ", ".join(sorted(self.commands))
            raise InvalidCommand(f"unknown command type {name!r}; known: {known}") from None

    # ---- events ---------------------------------------------------------------

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        target = self.event_class(event_type).schema_version
        while version < target:
            fn = self._upcasters.get((event_type, version))
            if fn is None:
                raise DecodeError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
            data = fn(data)
            version += 1
        if version > target:
            raise DecodeError(f"{event_type} v{version} is newer than this code (v{target})")
        return data

    def encode_event(self, envelope: Envelope, payload: Event) -> bytes:
        return b'{"envelope":%s,"payload":%s}' % (
            envelope.model_dump_json().encode(),
            payload.model_dump_json().encode(),
        )

    def decode_event(
        self, value: bytes | None, topic: str, partition: int, offset: int, timestamp_ms: int = 0
    ) -> StoredEvent:
        if not value:
            raise DecodeError("empty message value")
        fast = self._decode_current(value, topic, partition, offset, timestamp_ms)
        if fast is not None:
            return fast
        try:
            raw = json.loads(value)
            env = raw["envelope"]
            data = raw["payload"]
            event_type = env["event_type"]
            cls = self.event_class(event_type)
            data = self.upcast(event_type, int(env.get("schema_version", 1)), data)
            env["schema_version"] = cls.schema_version
            return StoredEvent(
                envelope=Envelope.model_validate(env),
                payload=cls.model_validate(data),
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=timestamp_ms,
            )
        except DecodeError:
            raise
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise DecodeError(f"undecodable event: {type(exc).__name__}: {exc}") from exc

    def _decode_current(
        self, value: bytes, topic: str, partition: int, offset: int, timestamp_ms: int
    ) -> StoredEvent | None:
        """Hot path: an event already at its current schema version, parsed and validated in one
        pass by pydantic's Rust JSON parser. Anything else (old versions, poison) returns None
        and takes the general path, which upcasts and explains errors."""
        start = value.find(b'"event_type":"')
        if start < 0:
            return None
        start += 14
        cls = self.events.get(value[start : value.find(b'"', start)].decode(errors="replace"))
        if cls is None:
            return None
        record = self._records.get(cls)
        if record is None:
            record = self._records[cls] = create_model(
                f"{cls.__name__}Record", envelope=(Envelope, ...), payload=(cls, ...)
            )
        try:
            parsed = record.model_validate_json(value)
        except ValidationError:
            return None
        envelope: Envelope = parsed.envelope  # type: ignore[attr-defined]
        if envelope.schema_version != cls.schema_version:
            return None
        return StoredEvent(
            envelope=envelope,
            payload=parsed.payload,  # type: ignore[attr-defined]
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
        )

    # ---- commands -------------------------------------------------------------

    def parse_command(self, type_name: str, data: dict[str, Any]) -> Command:
        """Build a command from untrusted input, turning validation errors into InvalidCommand."""
        cls = self.command_class(type_name)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidCommand(f"invalid {type_name}: {describe_validation_error(exc)}") from None

    def encode_command(self, command: Command) -> bytes:
        return b'{"type":"%s","command":%s}' % (
            command.type_name().encode(),
            command.model_dump_json().encode(),
        )

    def decode_command(self, value: bytes | None) -> Command:
        if not value:
            raise DecodeError("empty message value")
        try:
            raw = json.loads(value)
            return self.parse_command(raw["type"], raw["command"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"undecodable command: {type(exc).__name__}: {exc}") from exc


def event_headers(envelope: Envelope) -> list[tuple[str, str | bytes | None]]:
    return [
        (TYPE_HEADER, envelope.event_type.encode()),
        (VERSION_HEADER, str(envelope.schema_version).encode()),
    ]


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)

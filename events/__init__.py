"""The base of every domain: commands, events, their envelope, and the registry that
(de)serializes them and upcasts old schema versions."""

from __future__ import annotations

from events.base import Command, DomainModel, Envelope, Event, StoredEvent, new_id
from events.registry import DecodeError, InvalidCommand, Messages, Registry, Upcaster

__all__ = [
    "Command",
    "DecodeError",
    "DomainModel",
    "Envelope",
    "Event",
    "InvalidCommand",
    "Messages",
    "Registry",
    "StoredEvent",
    "Upcaster",
    "new_id",
]

"""Commands, events, their envelope and the registry that (de)serializes them."""

from __future__ import annotations

from events.base import Command, Envelope, Event, StoredEvent, new_id
from events.orders import ORDER_COMMANDS, ORDER_EVENTS, CancelOrder, OrderLine, PlaceOrder
from events.registry import DecodeError, InvalidCommand, Registry


def default_registry() -> Registry:
    """The registry of every command and event type Choreo knows."""
    return Registry(events=ORDER_EVENTS, commands=ORDER_COMMANDS)


__all__ = [
    "CancelOrder",
    "Command",
    "DecodeError",
    "Envelope",
    "Event",
    "InvalidCommand",
    "OrderLine",
    "PlaceOrder",
    "Registry",
    "StoredEvent",
    "default_registry",
    "new_id",
]

"""Commands, events, their envelope and the registry that (de)serializes them."""

from __future__ import annotations

from events.base import Command, Envelope, Event, StoredEvent, new_id
from events.inventory import INVENTORY_COMMANDS, INVENTORY_EVENTS, AddStock
from events.orders import ORDER_COMMANDS, ORDER_EVENTS, CancelOrder, OrderLine, PlaceOrder
from events.payment import PAYMENT_COMMANDS, PAYMENT_EVENTS
from events.registry import DecodeError, InvalidCommand, Registry
from events.shipping import SHIPPING_COMMANDS, SHIPPING_EVENTS
from events.upcasters import order_placed_v1_to_v2

ALL_EVENTS = (*ORDER_EVENTS, *INVENTORY_EVENTS, *PAYMENT_EVENTS, *SHIPPING_EVENTS)
ALL_COMMANDS = (*ORDER_COMMANDS, *INVENTORY_COMMANDS, *PAYMENT_COMMANDS, *SHIPPING_COMMANDS)


def default_registry() -> Registry:
    """The registry of every command and event type Choreo knows, with its upcasters."""
    registry = Registry(events=ALL_EVENTS, commands=ALL_COMMANDS)
    registry.add_upcaster("OrderPlaced", 1, order_placed_v1_to_v2)
    return registry


__all__ = [
    "ALL_COMMANDS",
    "ALL_EVENTS",
    "AddStock",
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

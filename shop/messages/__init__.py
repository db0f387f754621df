"""The shop's commands and events, one `Messages` bundle per service (named in cluster.yaml)."""

from __future__ import annotations

from events.registry import Messages, Registry
from shop.messages.inventory import INVENTORY_COMMANDS, INVENTORY_EVENTS, AddStock
from shop.messages.orders import ORDER_COMMANDS, ORDER_EVENTS, CancelOrder, OrderLine, PlaceOrder
from shop.messages.payment import PAYMENT_COMMANDS, PAYMENT_EVENTS
from shop.messages.shipping import SHIPPING_COMMANDS, SHIPPING_EVENTS
from shop.messages.upcasters import order_placed_v1_to_v2

ALL_EVENTS = (*ORDER_EVENTS, *INVENTORY_EVENTS, *PAYMENT_EVENTS, *SHIPPING_EVENTS)
ALL_COMMANDS = (*ORDER_COMMANDS, *INVENTORY_COMMANDS, *PAYMENT_COMMANDS, *SHIPPING_COMMANDS)

ORDER_MESSAGES = Messages(ORDER_EVENTS, ORDER_COMMANDS, upcasters={("OrderPlaced", 1): order_placed_v1_to_v2})
INVENTORY_MESSAGES = Messages(INVENTORY_EVENTS, INVENTORY_COMMANDS)
PAYMENT_MESSAGES = Messages(PAYMENT_EVENTS, PAYMENT_COMMANDS)
SHIPPING_MESSAGES = Messages(SHIPPING_EVENTS, SHIPPING_COMMANDS)


def registry() -> Registry:
    """Every message type of the shop with its upcasters (what the runtime builds from cluster.yaml)."""
    return Registry.of(ORDER_MESSAGES, INVENTORY_MESSAGES, PAYMENT_MESSAGES, SHIPPING_MESSAGES)


__all__ = [
    "ALL_COMMANDS",
    "ALL_EVENTS",
    "INVENTORY_MESSAGES",
    "ORDER_MESSAGES",
    "PAYMENT_MESSAGES",
    "SHIPPING_MESSAGES",
    "AddStock",
    "CancelOrder",
    "OrderLine",
    "PlaceOrder",
    "registry",
]

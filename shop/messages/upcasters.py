"""Upcasters: pure functions that lift a stored event payload one schema version up.

The registry runs them on read (`Registry.decode_event`), so everything that decodes events
(shard rehydration, policy runners, projections, the event log reader) sees only the current
shape. They are declared in the order service's `Messages` bundle (`shop.messages`). Each
function takes the payload dict of version N and returns a new dict of version N + 1; it never
mutates its input and never does I/O.
"""

from __future__ import annotations

from typing import Any

from shop.messages.orders import DEFAULT_CURRENCY


def order_placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """OrderPlaced v1 -> v2: `shipping_address` becomes `ship_to`; v1 orders were all in USD."""
    upcast = {key: value for key, value in payload.items() if key != "shipping_address"}
    upcast["ship_to"] = payload.get("shipping_address", "")
    upcast["currency"] = DEFAULT_CURRENCY
    return upcast

"""`inventory_levels`: every SKU's available, reserved, shipped and added stock over time."""

from __future__ import annotations

from typing import Any

from events.base import StoredEvent
from projections.base import POSITION_DDL, RowPerKey, Table
from shop.messages.inventory import StockAdded, StockReleased, StockReserved, StockShipped


class InventoryLevelsProjection(RowPerKey):
    name = "inventory_levels"
    topics = ("inventory-events",)
    key = "sku"
    table = Table(
        name="inventory_levels",
        columns=("sku", "at", "version", "event_type", "available", "reserved", "shipped", "added"),
        ddl=f"""
CREATE TABLE IF NOT EXISTS inventory_levels (
    sku String, at DateTime64(6, 'UTC'), version UInt32, event_type LowCardinality(String),
    available Int64, reserved Int64, shipped Int64, added Int64, {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (sku, version)""",
    )

    def key_of(self, event: StoredEvent) -> str | None:
        return event.aggregate_id

    def apply(self, row: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
        levels = dict(row) if row else {"available": 0, "reserved": 0, "shipped": 0, "added": 0}
        p = event.payload
        if isinstance(p, StockAdded):
            levels["added"] += p.quantity
            levels["available"] += p.quantity
        elif isinstance(p, StockReserved):
            levels["available"] -= p.quantity
            levels["reserved"] += p.quantity
        elif isinstance(p, StockReleased):
            levels["available"] += p.quantity
            levels["reserved"] -= p.quantity
        elif isinstance(p, StockShipped):
            levels["reserved"] -= p.quantity
            levels["shipped"] += p.quantity
        else:
            return None  # a refused reservation changes no level
        env = event.envelope
        return {**levels, "sku": env.aggregate_id, "at": env.occurred_at, "version": env.version,
                "event_type": env.event_type}  # fmt: skip

"""The `orders` projection: one current row per order, plus one history row per order event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from events.base import StoredEvent
from events.orders import OrderCancelled, OrderPlaced, OrderRejected
from projections.base import POSITION_DDL, Lookup, Projection, Row, Table, position

ORDER_COLUMNS = (
    "order_id", "customer_id", "status", "line_count", "total_cents", "reason",
    "version", "placed_at", "updated_at",
)  # fmt: skip
HISTORY_COLUMNS = ("event_id", "order_id", "event_type", "version", "occurred_at")

ORDERS = Table(
    name="orders",
    columns=ORDER_COLUMNS,
    ddl=f"""
CREATE TABLE IF NOT EXISTS orders (
    order_id String, customer_id String, status LowCardinality(String),
    line_count UInt16, total_cents Int64, reason String, version UInt32,
    placed_at DateTime64(3, 'UTC'), updated_at DateTime64(3, 'UTC'), {POSITION_DDL}
) ENGINE = ReplacingMergeTree(version) ORDER BY order_id""",
)

ORDER_HISTORY = Table(
    name="order_history",
    columns=HISTORY_COLUMNS,
    ddl=f"""
CREATE TABLE IF NOT EXISTS order_history (
    event_id String, order_id String, event_type LowCardinality(String), version UInt32,
    occurred_at DateTime64(3, 'UTC'), {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (order_id, version)""",
)

STATUS_BY_EVENT = {
    "OrderPlaced": "reserving",
    "OrderPaymentRequested": "paying",
    "OrderPaid": "shipping",
    "OrderConfirmed": "confirmed",
    "OrderRejected": "rejected",
    "OrderCancelled": "cancelled",
}


class OrdersProjection(Projection):
    name = "orders"
    topics = ("order-events",)
    tables = (ORDERS, ORDER_HISTORY)

    def __init__(self) -> None:
        self._current: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        self._current.clear()

    def _load_missing(self, ids: set[str], lookup: Lookup) -> None:
        missing = [i for i in ids if i not in self._current]
        if not missing:
            return
        cols = ", ".join(ORDER_COLUMNS)
        for row in lookup(f"SELECT {cols} FROM orders FINAL WHERE order_id IN %(ids)s", {"ids": missing}):
            self._current[row[0]] = dict(zip(ORDER_COLUMNS, row, strict=True))

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        self._load_missing({e.aggregate_id for e in events if e.version > 1}, lookup)
        orders: list[Row] = []
        history: list[Row] = []
        for ev in events:
            env, payload = ev.envelope, ev.payload
            history.append(
                (env.event_id, env.aggregate_id, env.event_type, env.version, env.occurred_at,
                 *position(ev))
            )  # fmt: skip
            row = self._current.get(env.aggregate_id)
            if isinstance(payload, OrderPlaced):
                row = {
                    "order_id": payload.order_id,
                    "customer_id": payload.customer_id,
                    "line_count": len(payload.lines),
                    "total_cents": payload.total_cents,
                    "reason": "",
                    "placed_at": env.occurred_at,
                }
            elif row is None:
                continue  # an event for an order this projection never saw placed
            if isinstance(payload, OrderCancelled | OrderRejected):
                row["reason"] = payload.reason
            row.update(
                status=STATUS_BY_EVENT.get(env.event_type, row.get("status", "reserving")),
                version=env.version,
                updated_at=env.occurred_at,
            )
            self._current[env.aggregate_id] = row
            orders.append((*(row[c] for c in ORDER_COLUMNS), *position(ev)))
        return {ORDERS.name: orders, ORDER_HISTORY.name: history}

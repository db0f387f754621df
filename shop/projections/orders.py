"""Order projections: current order rows, order lines, orders per customer, saga outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from events.base import StoredEvent
from projections.base import POSITION_DDL, Lookup, Projection, Row, RowPerKey, Table, position
from shop.messages.orders import OUTCOMES, OrderCancelled, OrderPlaced, OrderRejected

STATUS_BY_EVENT = {
    "OrderPlaced": "reserving",
    "OrderPaymentRequested": "paying",
    "OrderPaid": "shipping",
    "OrderConfirmed": "confirmed",
    "OrderRejected": "rejected",
    "OrderCancelled": "cancelled",
}
TERMINAL = frozenset(OUTCOMES.values())


def _order_row(row: dict[str, Any] | None, ev: StoredEvent) -> dict[str, Any] | None:
    """The order's current row after `ev`: shared by every per-order projection."""
    env, payload = ev.envelope, ev.payload
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
        return None  # an event for an order whose placement this projection never saw
    else:
        row = dict(row)
    if isinstance(payload, OrderCancelled | OrderRejected):
        row["reason"] = payload.reason
    row["status"] = STATUS_BY_EVENT.get(env.event_type, row.get("status", "reserving"))
    row["version"] = env.version
    row["updated_at"] = env.occurred_at
    return row


class _OrderRows(RowPerKey):
    """A table holding each order's current row (see `_order_row`)."""

    topics = ("order-events",)
    key = "order_id"

    def key_of(self, event: StoredEvent) -> str | None:
        return event.aggregate_id

    def apply(self, row: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
        return _order_row(row, event)


class OrdersProjection(_OrderRows):
    """`orders`: one current row per order (ReplacingMergeTree by version; query with FINAL)."""

    name = "orders"
    table = Table(
        name="orders",
        columns=(
            "order_id", "customer_id", "status", "line_count", "total_cents", "reason",
            "version", "placed_at", "updated_at",
        ),
        ddl=f"""
CREATE TABLE IF NOT EXISTS orders (
    order_id String, customer_id String, status LowCardinality(String),
    line_count UInt16, total_cents Int64, reason String, version UInt32,
    placed_at DateTime64(6, 'UTC'), updated_at DateTime64(6, 'UTC'), {POSITION_DDL}
) ENGINE = ReplacingMergeTree(version) ORDER BY order_id""",
    )  # fmt: skip


class CustomerOrdersProjection(_OrderRows):
    """`customer_orders`: orders by customer, read newest first."""

    name = "customer_orders"
    table = Table(
        name="customer_orders",
        columns=("customer_id", "placed_at", "order_id", "status", "total_cents", "version"),
        ddl=f"""
CREATE TABLE IF NOT EXISTS customer_orders (
    customer_id String, placed_at DateTime64(6, 'UTC'), order_id String,
    status LowCardinality(String), total_cents Int64, version UInt32, {POSITION_DDL}
) ENGINE = ReplacingMergeTree(version) ORDER BY (customer_id, placed_at, order_id)""",
    )


class SagaOutcomesProjection(RowPerKey):
    """`saga_outcomes`: per order its terminal state, the reason and the saga's duration."""

    name = "saga_outcomes"
    topics = ("order-events",)
    key = "order_id"
    table = Table(
        name="saga_outcomes",
        columns=("order_id", "outcome", "reason", "placed_at", "ended_at", "duration_ms", "version"),
        ddl=f"""
CREATE TABLE IF NOT EXISTS saga_outcomes (
    order_id String, outcome LowCardinality(String), reason String,
    placed_at DateTime64(6, 'UTC'), ended_at Nullable(DateTime64(6, 'UTC')),
    duration_ms Nullable(Float64), version UInt32, {POSITION_DDL}
) ENGINE = ReplacingMergeTree(version) ORDER BY order_id""",
    )

    def key_of(self, event: StoredEvent) -> str | None:
        return event.aggregate_id

    def apply(self, row: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
        env, payload = event.envelope, event.payload
        if isinstance(payload, OrderPlaced):
            return {
                "order_id": env.aggregate_id, "outcome": "open", "reason": "",
                "placed_at": env.occurred_at, "ended_at": None, "duration_ms": None,
                "version": env.version,
            }  # fmt: skip
        status = STATUS_BY_EVENT.get(env.event_type)
        if row is None or status not in TERMINAL:
            return None
        duration = (env.occurred_at - row["placed_at"]).total_seconds() * 1000
        reason = payload.reason if isinstance(payload, OrderCancelled | OrderRejected) else ""
        return {
            **row, "outcome": status, "reason": reason, "ended_at": env.occurred_at,
            "duration_ms": duration, "version": env.version,
        }  # fmt: skip


ORDER_LINES = Table(
    name="order_lines",
    columns=(
        "order_id",
        "sku",
        "quantity",
        "unit_price_cents",
        "line_total_cents",
        "customer_id",
        "placed_at",
    ),
    ddl=f"""
CREATE TABLE IF NOT EXISTS order_lines (
    order_id String, sku String, quantity UInt32, unit_price_cents Int64, line_total_cents Int64,
    customer_id String, placed_at DateTime64(6, 'UTC'), {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (sku, order_id)""",
)


class OrderLinesProjection(Projection):
    """`order_lines`: one row per line of every placed order."""

    name = "order_lines"
    topics = ("order-events",)
    tables = (ORDER_LINES,)

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        rows: list[Row] = []
        for ev in events:
            p = ev.payload
            if isinstance(p, OrderPlaced):
                for line in p.lines:
                    rows.append(
                        (p.order_id, line.sku, line.quantity, line.unit_price_cents,
                         line.quantity * line.unit_price_cents, p.customer_id, ev.envelope.occurred_at,
                         *position(ev))
                    )  # fmt: skip
        return {ORDER_LINES.name: rows}

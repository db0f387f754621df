"""`sales_per_minute`: money captured and refunded per minute, kept by a materialized view."""

from __future__ import annotations

from collections.abc import Sequence

from events.base import StoredEvent
from projections.base import POSITION_DDL, Lookup, Projection, Row, Table, View, position
from shop.messages.payment import PaymentCaptured, PaymentRefunded

PAYMENTS = Table(
    name="sales_payments",
    columns=("at", "order_id", "captured_cents", "refunded_cents"),
    ddl=f"""
CREATE TABLE IF NOT EXISTS sales_payments (
    at DateTime64(6, 'UTC'), order_id String, captured_cents Int64, refunded_cents Int64, {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (at, order_id)""",
)

PER_MINUTE = View(
    name="sales_per_minute_mv",
    source=PAYMENTS.name,
    target=Table(
        name="sales_per_minute",
        columns=("minute", "captures", "captured", "refunds", "refunded", "net"),
        ddl="""
CREATE TABLE IF NOT EXISTS sales_per_minute (
    minute DateTime('UTC'), captures UInt64, captured Int64, refunds UInt64, refunded Int64, net Int64
) ENGINE = SummingMergeTree ORDER BY minute""",
    ),
    select="""
SELECT toStartOfMinute(at) AS minute,
       countIf(captured_cents > 0) AS captures, sum(captured_cents) AS captured,
       countIf(refunded_cents > 0) AS refunds, sum(refunded_cents) AS refunded,
       captured - refunded AS net
FROM {source} GROUP BY minute""",
)


class SalesProjection(Projection):
    """Payments land exactly once in `sales_payments`; the view `sales_per_minute_mv` sums them per
    minute into the table `sales_per_minute`.
    Query with `SELECT minute, sum(net) FROM sales_per_minute GROUP BY minute` (cents)."""

    name = "sales_per_minute"
    topics = ("payment-events",)
    tables = (PAYMENTS,)
    views = (PER_MINUTE,)

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        rows: list[Row] = []
        for ev in events:
            p = ev.payload
            if isinstance(p, PaymentCaptured):
                rows.append((ev.envelope.occurred_at, p.order_id, p.amount_cents, 0, *position(ev)))
            elif isinstance(p, PaymentRefunded):
                rows.append((ev.envelope.occurred_at, p.order_id, 0, p.amount_cents, *position(ev)))
        return {PAYMENTS.name: rows}

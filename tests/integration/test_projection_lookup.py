"""A projection restarted mid-saga reads its rows back from ClickHouse and keeps folding into them."""

from __future__ import annotations

import uuid

from events import default_registry
from events.base import Envelope, StoredEvent, utc_now
from events.orders import OrderCancelled, OrderLine, OrderPlaced
from projections.orders import OrdersProjection, SagaOutcomesProjection
from projections.runner import ProjectionRunner
from projections.sink import ClickHouseSink


def _event(payload, version: int, offset: int) -> StoredEvent:
    env = Envelope(
        event_id=uuid.uuid4().hex, event_type=payload.type_name(), aggregate_type="order", aggregate_id="o1",
        version=version, occurred_at=utc_now(), correlation_id="o1", causation_id="c", schema_version=payload.schema_version,
    )
    return StoredEvent(envelope=env, payload=payload, topic="order-events", partition=0, offset=offset)


def test_rows_read_back_after_a_restart_fold_like_cached_ones(tmp_path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    placed = _event(OrderPlaced(order_id="o1", customer_id="c", lines=(OrderLine(sku="A", quantity=1, unit_price_cents=5),), total_cents=5), 1, 0)
    cancelled = _event(OrderCancelled(order_id="o1", reason="deadline exceeded"), 2, 1)
    for projection in (SagaOutcomesProjection(), OrdersProjection()):
        runner = ProjectionRunner(projection, sink, {"bootstrap.servers": "unused"}, default_registry(), group_id="g")
        for table in projection.tables:
            sink.create(table)
            runner.table_max[table.name] = {}
        runner._write([placed])
        projection.reset()  # as after a restart: the cache is gone
        runner._write([cancelled])
    outcome = sink.query("SELECT outcome, reason, duration_ms >= 0 FROM saga_outcomes FINAL").rows
    assert outcome == [("cancelled", "deadline exceeded", True)]
    assert sink.query("SELECT status, version, total_cents FROM orders FINAL").rows == [("cancelled", 2, 5)]

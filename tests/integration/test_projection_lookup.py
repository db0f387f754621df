"""A projection restarted mid-saga reads its rows back from ClickHouse and keeps folding into them."""

from __future__ import annotations

import uuid

from events.base import Envelope, StoredEvent, utc_now
from projections.runner import ProjectionRunner
from projections.sink import ClickHouseSink
from shop.messages import registry as shop_registry
from shop.messages.orders import OrderCancelled, OrderLine, OrderPlaced
from shop.projections.orders import OrdersProjection, SagaOutcomesProjection


def _event(payload, version: int, offset: int) -> StoredEvent:
    env = Envelope(
        event_id=uuid.uuid4().hex,
        event_type=payload.type_name(),
        aggregate_type="order",
        aggregate_id="o1",
        version=version,
        occurred_at=utc_now(),
        correlation_id="o1",
        causation_id="c",
        schema_version=payload.schema_version,
    )
    return StoredEvent(envelope=env, payload=payload, topic="order-events", partition=0, offset=offset)


def test_rows_read_back_after_a_restart_fold_like_cached_ones(tmp_path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    placed = _event(
        OrderPlaced(
            order_id="o1", customer_id="c", lines=(OrderLine(sku="A", quantity=1, unit_price_cents=5),), total_cents=5
        ),
        1,
        0,
    )
    cancelled = _event(OrderCancelled(order_id="o1", reason="deadline exceeded"), 2, 1)
    for projection in (SagaOutcomesProjection(), OrdersProjection()):
        runner = ProjectionRunner(projection, sink, {"bootstrap.servers": "unused"}, shop_registry(), group_id="g")
        for table in projection.tables:
            sink.create(table)
            runner.table_max[table.name] = {}
        runner._write([placed])
        projection.reset()  # as after a restart: the cache is gone
        runner._write([cancelled])
    outcome = sink.query("SELECT outcome, reason, duration_ms >= 0 FROM saga_outcomes FINAL").rows
    assert outcome == [("cancelled", "deadline exceeded", True)]
    assert sink.query("SELECT status, version, total_cents FROM orders FINAL").rows == [("cancelled", 2, 5)]


def test_a_read_model_ahead_of_its_log_is_rebuilt_from_the_log(make_settings, tmp_path) -> None:
    from confluent_kafka import Producer

    from choreography.topology import ensure_topics

    settings = make_settings(shards=1, partitions=1)
    ensure_topics(settings)
    topic = settings.topic_name("order-events")
    registry = shop_registry()
    placed = _event(
        OrderPlaced(
            order_id="real", customer_id="c", lines=(OrderLine(sku="A", quantity=1, unit_price_cents=5),), total_cents=5
        ),
        1,
        0,
    )
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(topic, key=b"real", value=registry.encode_event(placed.envelope, placed.payload), partition=0)
    assert producer.flush(10) == 0

    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch2'}")
    projection = OrdersProjection()
    sink.create(projection.table)
    stale = (
        "ghost",
        "c",
        "confirmed",
        1,
        5,
        "",
        6,
        placed.envelope.occurred_at,
        placed.envelope.occurred_at,
        topic,
        0,
        5000,
    )
    sink.insert(projection.table, [stale])

    runner = ProjectionRunner(
        projection,
        sink,
        settings.kafka.client_config(),
        registry,
        group_id=f"{settings.namespace}-x",
        topics=["order-events"],
        topic_prefix=settings.topic_prefix,
        flush_interval_ms=500,
    )
    runner.start()
    for _ in range(20):
        runner.poll_batch()
        if runner.positions().get((topic, 0), 0) >= 1:
            break
    runner.stop()
    assert sink.query("SELECT order_id FROM orders FINAL").rows == [("real",)]

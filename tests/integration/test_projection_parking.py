"""An event ClickHouse refuses (here an order total beyond Int64, written past the command door)
is parked in the dead-letter topic by each projection it breaks; the projections go on."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import ray
from confluent_kafka import Producer

from events.base import Envelope
from events.log.dlq import read_dead_letters
from events.log.topics import partition_for
from events.registry import event_headers
from shop.messages import AddStock, OrderLine, PlaceOrder
from shop.messages import registry as shop_registry
from shop.messages.orders import OrderPlaced

BROKEN = ("orders", "customer_orders", "order_lines")


def _produce_huge_order(settings, order_id: str) -> None:
    line = OrderLine.model_construct(sku="NO-SUCH-SKU", quantity=1, unit_price_cents=10**30)
    payload = OrderPlaced(order_id=order_id, customer_id="c-huge", lines=(line,), total_cents=10**30)
    envelope = Envelope(
        event_id=uuid.uuid4().hex, event_type="OrderPlaced", aggregate_type="order", aggregate_id=order_id,
        version=1, occurred_at=datetime.now(UTC), correlation_id=order_id, causation_id=order_id,
        schema_version=OrderPlaced.schema_version,
    )  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(
        settings.topic_name("order-events"), key=order_id.encode(), value=shop_registry().encode_event(envelope, payload),
        partition=partition_for(order_id, 2), headers=event_headers(envelope),
    )  # fmt: skip
    assert producer.flush(10) == 0


def test_an_event_clickhouse_refuses_is_parked_and_the_projections_go_on(make_settings, start_system) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings, metrics=False)
    run = uuid.uuid4().hex[:6]
    host = system.projection_hosts["orders"]
    system.submit_many([AddStock(sku="N1", quantity=100)])
    pid = ray.get(host.pid.remote())

    _produce_huge_order(settings, f"{run}-huge")
    ids = [f"{run}-{i}" for i in range(3)]
    line = (OrderLine(sku="N1", quantity=1, unit_price_cents=250),)
    assert all(o.ok for o in system.submit_many([PlaceOrder(order_id=i, customer_id="c", lines=line) for i in ids]))

    deadline = time.monotonic() + 60
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        seen = {
            "orders": system.query("SELECT count() FROM orders FINAL WHERE order_id IN %(ids)s", {"ids": ids}).scalar(),
            "order_lines": system.query(
                "SELECT count() FROM order_lines WHERE order_id IN %(ids)s", {"ids": ids}
            ).scalar(),
            "customer_orders": system.query(
                "SELECT count() FROM customer_orders FINAL WHERE order_id IN %(ids)s", {"ids": ids}
            ).scalar(),
            "events_raw": system.query(
                "SELECT count() FROM events_raw WHERE event_type = 'OrderPlaced' AND aggregate_id IN %(ids)s",
                {"ids": [*ids, f"{run}-huge"]},
            ).scalar(),
        }
        if seen == {**dict.fromkeys(BROKEN, 3), "events_raw": 4}:
            break
        time.sleep(0.5)
    # events_raw takes the bad event (no column overflows) and the three orders after it.
    assert seen == {**dict.fromkeys(BROKEN, 3), "events_raw": 4}, "the orders after the bad one did not become visible"
    assert ray.get(host.pid.remote()) == pid, "the projection host restarted (crash loop)"

    letters = [
        letter
        for letter in read_dead_letters(settings.kafka.client_config(), settings.topic_name("choreo-dead-letters"))
        if letter.stage.startswith("projection ")
    ]
    assert {letter.stage for letter in letters} == {f"projection {name}" for name in BROKEN}
    assert len(letters) == len(BROKEN)
    for letter in letters:
        assert letter.source_topic == settings.topic_name("order-events")
        assert letter.key == f"{run}-huge".encode()
        assert letter.error
    status = system.projection_status()
    assert {name: status[name]["parked"] for name in status} == {name: (1 if name in BROKEN else 0) for name in status}
    assert (
        system.query("SELECT count() FROM events_raw WHERE aggregate_id = %(id)s", {"id": f"{run}-huge"}).scalar() == 1
    )

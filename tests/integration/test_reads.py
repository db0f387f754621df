"""Read-your-writes, time travel, history, and lag exported as Ray metrics."""

from __future__ import annotations

import time
import urllib.request
import uuid
from datetime import UTC, datetime

import pytest
import ray

from choreography.errors import ProjectionTimeout
from choreography.lag import consumer_lag
from shop.messages import AddStock, CancelOrder, OrderLine, PlaceOrder
from shop.messages.orders import RecordPaymentCaptured, RecordStockReserved


def test_wait_for_returns_only_once_the_row_is_visible_and_times_out_when_stopped(make_settings, start_system) -> None:
    system = start_system(make_settings(shards=1, partitions=2), policies=False, metrics=False)
    line = (OrderLine(sku="A", quantity=1, unit_price_cents=5),)
    for i in range(20):
        oid = f"ryw-{uuid.uuid4().hex[:6]}-{i}"
        system.submit(PlaceOrder(order_id=oid, customer_id="c", lines=line), wait_for="orders")
        # No sleep, no retry: the row must already be there.
        assert system.query("SELECT status FROM orders FINAL WHERE order_id = %(o)s", {"o": oid}).rows == [
            ("reserving",)
        ]

    system.pause_projection("orders")
    events = system.submit(PlaceOrder(order_id=f"ryw-paused-{uuid.uuid4().hex[:6]}", customer_id="c", lines=line))
    started = time.monotonic()
    with pytest.raises(ProjectionTimeout, match="projection 'orders' did not reach"):
        system.wait_for(events, projection="orders", timeout=1.5)
    assert 1.4 < time.monotonic() - started < 5
    system.resume_projection("orders")
    system.wait_for(events, projection="orders", timeout=30)


def test_time_travel_returns_the_exact_earlier_state(make_settings, start_system) -> None:
    system = start_system(make_settings(shards=1, partitions=2), projections=False, policies=False, metrics=False)
    oid = f"tt-{uuid.uuid4().hex[:6]}"
    lines = (OrderLine(sku="A", quantity=1, unit_price_cents=300), OrderLine(sku="B", quantity=2, unit_price_cents=50))
    steps = [
        PlaceOrder(order_id=oid, customer_id="c", lines=lines),
        RecordStockReserved(order_id=oid, sku="A"),
        RecordStockReserved(order_id=oid, sku="B"),
        RecordPaymentCaptured(order_id=oid, amount_cents=400),
    ]
    captured = []
    for command in steps:
        system.submit(command)
        state, version = system.state("order", oid)
        captured.append((datetime.now(UTC), state, version))
        time.sleep(0.05)

    for at, state, version in captured:
        assert system.state("order", oid, version=version) == (state, version)
        assert system.state("order", oid, as_of=at) == (state, version)
    assert system.state("order", oid, as_of=datetime(2000, 1, 1, tzinfo=UTC))[1] == 0

    history = system.history("order", oid)
    assert [e.envelope.event_type for e in history] == [
        "OrderPlaced",
        "OrderLineReserved",
        "OrderLineReserved",
        "OrderPaymentRequested",
        "OrderPaid",
    ]
    assert [e.version for e in history] == [1, 2, 3, 4, 5]
    with pytest.raises(Exception, match="already being shipped"):
        system.submit(CancelOrder(order_id=oid))


def test_lag_covers_every_group_and_reaches_ray_metrics(make_settings, start_system) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings)
    system.submit_many([AddStock(sku="L1", quantity=100)])
    system.submit(
        PlaceOrder(
            order_id=f"lag-{uuid.uuid4().hex[:6]}",
            customer_id="c",
            lines=(OrderLine(sku="L1", quantity=1, unit_price_cents=1),),
        )
    )
    deadline = time.monotonic() + 60
    rows = []
    while time.monotonic() < deadline:
        rows = consumer_lag(settings)
        groups = {r.group for r in rows}
        # Transactional topics end with a commit marker, so a caught-up group may show lag 1.
        if all(r.lag <= 1 for r in rows) and len(groups) >= 4 + 4 + len(settings.projections):
            break
        time.sleep(1)
    kinds = {r.kind for r in rows}
    assert kinds == {"shard", "policy", "projection"}
    assert all(r.lag <= 1 for r in rows), [r for r in rows if r.lag > 1]
    assert any(r.committed > 0 for r in rows if r.kind == "projection")

    port = ray.nodes()[0]["MetricsExportPort"]
    body = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "choreo_consumer_lag" not in body:
        time.sleep(2)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "ray_choreo_consumer_lag" in body
    assert f'group="{settings.namespace}-projection-orders"' in body

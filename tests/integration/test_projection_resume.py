"""The orders projection resumes after kills from ClickHouse's own offsets: no row lost or doubled."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import ray

from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder
from tests.integration.conftest import read_log
from tests.integration.test_shard_restart import fold_log


def test_restarted_projection_matches_the_event_log(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=4)
    system = start_system(settings, policies=False)
    run = uuid.uuid4().hex[:6]
    line = (OrderLine(sku="A", quantity=2, unit_price_cents=250),)
    places = [PlaceOrder(order_id=f"{run}-{i}", customer_id=f"c{i % 9}", lines=line) for i in range(3000)]
    cancels = [CancelOrder(order_id=f"{run}-{i}") for i in range(0, 3000, 3)]

    def drive() -> None:
        for start in range(0, len(places), 100):
            assert all(o.ok for o in system.submit_many(places[start : start + 100]))
            time.sleep(0.01)
        for start in range(0, len(cancels), 100):
            assert all(o.ok for o in system.submit_many(cancels[start : start + 100]))

    driver = threading.Thread(target=drive)
    driver.start()
    pids = set()
    for _ in range(3):
        time.sleep(0.4)
        pids.add(ray.get(system.projection_hosts["orders"].pid.remote()))
        ray.kill(system.projection_hosts["orders"], no_restart=False)
    driver.join(timeout=300)
    assert not driver.is_alive()

    log = read_log(settings, "order-events")
    assert len(log) == len(places) + len(cancels)
    system.wait_for(log, projection="orders", timeout=120)
    pids.add(ray.get(system.projection_hosts["orders"].pid.remote()))
    assert len(pids) >= 3, "the projection host was not restarted"

    system.wait_for(log, projection="events_raw", timeout=120)
    raw = system.query("SELECT count(), uniqExact(event_id) FROM events_raw").rows[0]
    assert raw == (len(log), len(log)), "events_raw must hold each event exactly once"

    expected = Counter(state.status.value for state, _ in fold_log(log).values())
    rows = system.query("SELECT status, count() FROM orders FINAL GROUP BY status").rows
    assert dict(rows) == dict(expected)
    assert dict(rows) == {"reserving": 2000, "cancelled": 1000}
    total = system.query("SELECT sum(total_cents), count() FROM orders FINAL").rows[0]
    assert total == (3000 * 500, 3000)

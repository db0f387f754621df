"""Live rescaling under load: order and inventory shards go 2 -> 4 -> 1, then the inventory policy
runners 1 -> 2, while orders flow through the whole choreography. Partitions move one at a time; commands that reach a moving partition are
retried inside the client API, so no caller sees an error, and once the load settles every
invariant holds, from the log and in ClickHouse."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import ray

from choreography.config import settings_from_metadata
from shop.invariants import audit
from shop.messages import AddStock, OrderLine, PlaceOrder
from tests.integration.conftest import isolated_metadata, read_log

SKUS = [f"SKU-{i:02d}" for i in range(16)]
SERVICES = ("order", "inventory", "payment", "shipping")


def test_scaling_order_and_inventory_2_4_1_under_load_keeps_every_invariant(
    tmp_path: Path, kafka_bootstrap: str, start_system
) -> None:
    meta = isolated_metadata(tmp_path, kafka_bootstrap, partitions=4, letter="r")
    for service in ("order", "inventory"):
        meta["services"][service].update(shards=2, snapshot_every=200, max_aggregates=300)
    settings = settings_from_metadata(meta, env={})
    system = start_system(settings, metrics=False)
    assert all(o.ok for o in system.submit_many([AddStock(sku=s, quantity=1_000_000) for s in SKUS]))
    run = uuid.uuid4().hex[:6]
    orders: list[PlaceOrder] = []
    errors: list[BaseException] = []
    refused: list[object] = []
    stop = threading.Event()

    def drive() -> None:
        """Place orders, 20 per call, until told to stop."""
        try:
            while not stop.is_set():
                batch = [
                    PlaceOrder(order_id=f"{run}-{i}", customer_id=f"c{i % 40}",
                               lines=(OrderLine(sku=SKUS[i % len(SKUS)], quantity=1, unit_price_cents=700),))
                    for i in range(len(orders), len(orders) + 20)
                ]  # fmt: skip
                outcomes = system.submit_many(batch, timeout=120)
                refused.extend(o for o in outcomes if not o.ok)
                orders.extend(batch)
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    steps = []
    for shards in (4, 1):
        for service in ("order", "inventory"):
            before = len(orders)
            while len(orders) < before + 100 and driver.is_alive():
                time.sleep(0.1)
            during = len(orders)
            report = system.scale(service, shards)
            steps.append({**report.as_dict(), "orders_during": len(orders) - during})
            assert len(system.shards[service]) == shards
    paused = system.scale_runners("inventory", 2)  # its reactions pause; the load goes on
    assert len(system.policy_runners["inventory"]) == 2
    before = len(orders)
    while len(orders) < before + 100 and driver.is_alive():
        time.sleep(0.1)
    stop.set()
    driver.join(timeout=120)
    print(f"inventory policy runners 1 -> 2: reactions paused {paused:.2f}s")
    print("\nrescale:", json.dumps([{k: v for k, v in s.items() if k != "moves"} for s in steps]))
    assert errors == [], "no caller sees an error"
    assert refused == [], "no order is refused"
    assert all(s["orders_during"] > 0 for s in steps), "orders kept flowing during every rescale"
    assert [len(s["moves"]) for s in steps] == [2, 2, 3, 3], "only the partitions that change owner move"

    for service in ("order", "inventory"):
        (only,) = system.shards[service]
        assert ray.get(only.info.remote())["partitions"] == [0, 1, 2, 3]
    deadline = time.monotonic() + 240
    while True:
        log = [e for svc in SERVICES for e in read_log(settings, f"{svc}-events")]
        result = audit(log, order_ids=[o.order_id for o in orders])
        done = system.query(
            "SELECT count() FROM orders FINAL WHERE status IN ('confirmed', 'cancelled', 'rejected')"
        ).rows[0][0]
        if (result.ok and done >= len(orders)) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result.ok, result.violations[:5]
    assert result.orders == len(orders) and done == len(orders)
    assert system.dead_letters() == []

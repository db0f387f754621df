"""The analytic read side: every projection equals the event log, even when its actor is killed
mid-batch again and again; a rebuild equals the live build, checksum for checksum."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import ray

from actors.aggregate import fold
from shop.invariants import audit
from shop.messages.orders import OUTCOMES
from tests.integration.conftest import read_log
from tests.integration.workload import run_workload, wait_projections_caught_up, wait_settled

SERVICES = ("order", "inventory", "payment", "shipping")

CHECKSUMS = {
    "orders": "SELECT count(), sum(cityHash64(*)) FROM orders FINAL",
    "order_lines": "SELECT count(), sum(cityHash64(*)) FROM order_lines",
    "customer_orders": "SELECT count(), sum(cityHash64(*)) FROM customer_orders FINAL",
    "saga_outcomes": "SELECT count(), sum(cityHash64(*)) FROM saga_outcomes FINAL",
    "sales_per_minute": "SELECT count(), sum(cityHash64(*)), (SELECT sum(net) FROM sales_per_minute) FROM sales_payments",
    "inventory_levels": "SELECT count(), sum(cityHash64(*)) FROM inventory_levels",
    "events_raw": "SELECT count(), sum(cityHash64(*)) FROM events_raw",
}


def _full_log(settings) -> list:
    return [e for s in SERVICES for e in read_log(settings, f"{s}-events")]


def _checksums(system) -> dict[str, tuple]:
    return {name: system.query(sql).rows[0] for name, sql in CHECKSUMS.items()}


def test_projections_equal_the_log_under_repeated_kills_and_rebuild_equals_live(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=4)
    system = start_system(settings, metrics=False)
    run = uuid.uuid4().hex[:6]
    host = system.projection_hosts["orders"]
    pids: set[int] = set()
    kills = 0
    placed: list = []

    driver = threading.Thread(target=lambda: placed.extend(run_workload(system, run, 1500)))
    driver.start()
    while driver.is_alive() or kills < 6:
        time.sleep(0.7)
        pids.add(ray.get(host.pid.remote()))
        ray.kill(host, no_restart=False)
        kills += 1
    driver.join()
    order_ids = [p.order_id for p in placed]
    wait_settled(system, order_ids)
    log = _full_log(settings)
    wait_projections_caught_up(system, log)
    pids.add(ray.get(host.pid.remote()))
    assert len(pids) >= 6, "the projection actor was not restarted each time"

    result = audit(log, order_ids=order_ids)
    assert result.ok, result.violations
    order_events = [e for e in log if e.envelope.aggregate_type == "order"]
    placed_events = [e.payload for e in order_events if e.envelope.event_type == "OrderPlaced"]

    # events_raw: every event exactly once.
    assert system.query("SELECT count(), uniqExact(event_id) FROM events_raw").rows[0] == (len(log), len(log))
    # orders / customer_orders: one current row per order with the log's status.
    from shop.projections.orders import STATUS_BY_EVENT

    final_status: dict[str, str] = {}
    for e in sorted(order_events, key=lambda e: e.version):
        final_status[e.aggregate_id] = STATUS_BY_EVENT.get(
            e.envelope.event_type, final_status.get(e.aggregate_id, "reserving")
        )
    want = Counter(final_status.values())
    assert dict(system.query("SELECT status, count() FROM orders FINAL GROUP BY status").rows) == dict(want)
    assert dict(system.query("SELECT status, count() FROM customer_orders FINAL GROUP BY status").rows) == dict(want)
    # order_lines: one row per placed line, same money.
    lines = [(line, p) for p in placed_events for line in p.lines]
    assert system.query("SELECT count(), sum(line_total_cents) FROM order_lines").rows[0] == (
        len(lines),
        sum(line.quantity * line.unit_price_cents for line, _ in lines),
    )
    # saga_outcomes: one outcome per order, matching the terminal events.
    outcomes = OUTCOMES
    want_outcomes = Counter(outcomes[k] for k, n in result.outcomes.items() for _ in range(n))
    got = dict(system.query("SELECT outcome, count() FROM saga_outcomes FINAL GROUP BY outcome").rows)
    assert got == dict(want_outcomes)
    assert system.query("SELECT countIf(duration_ms <= 0) FROM saga_outcomes FINAL").scalar() == 0
    # sales_per_minute: money captured and refunded, exactly.
    sums = system.query("SELECT sum(captured), sum(refunded), sum(net) FROM sales_per_minute").rows[0]
    assert sums == (result.captured_cents, result.refunded_cents, result.captured_cents - result.refunded_cents)
    # inventory_levels: the latest row per SKU equals the log's fold.
    levels = dict(
        (r[0], r[1:])
        for r in system.query(
            "SELECT sku, available, reserved, shipped, added FROM inventory_levels ORDER BY version DESC LIMIT 1 BY sku"
        ).rows
    )
    inventory = [e for e in log if e.envelope.aggregate_type == "inventory"]
    from shop.aggregates.inventory import StockItemAggregate

    agg = StockItemAggregate()
    by_sku: dict[str, list[Any]] = {}
    for e in sorted(inventory, key=lambda e: (e.aggregate_id, e.version)):
        by_sku.setdefault(e.aggregate_id, []).append(e.payload)
    folded = {sku: fold(agg, payloads) for sku, payloads in by_sku.items()}
    assert levels == {sku: (s.available, s.reserved_total, s.shipped, s.added) for sku, s in folded.items()}

    # Rebuild equals live: drop and replay every projection, then compare checksums.
    live = _checksums(system)
    for name in CHECKSUMS:
        system.rebuild_projection(name)
    wait_projections_caught_up(system, log)
    assert _checksums(system) == live

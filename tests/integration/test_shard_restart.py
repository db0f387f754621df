"""A shard killed mid-stream restarts, rehydrates to the same state, and loses or doubles nothing."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import ray

from actors.outcomes import Accepted, Outcome
from choreography.errors import ShardUnavailable
from shop.aggregates.order import OrderAggregate
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder
from tests.integration.conftest import read_log


def _place(run: str, i: int) -> PlaceOrder:
    return PlaceOrder(
        order_id=f"{run}-{i}",
        customer_id=f"c{i % 17}",
        lines=(OrderLine(sku=f"S{i % 5}", quantity=1 + i % 3, unit_price_cents=100 + i),),
    )


def fold_log(events: list[Any]) -> dict[str, tuple[Any, int]]:
    """Expected state of every aggregate, from the log alone, through the pure aggregate."""
    agg = OrderAggregate()
    states: dict[str, tuple[Any, int]] = {}
    for ev in sorted(events, key=lambda e: (e.aggregate_id, e.version)):
        state, version = states.get(ev.aggregate_id, (agg.initial(), 0))
        assert ev.version == version + 1, f"version gap on {ev.aggregate_id}"
        states[ev.aggregate_id] = (agg.evolve(state, ev.payload), ev.version)
    return states


def test_killed_shard_rehydrates_and_applies_each_command_exactly_once(make_settings, start_system) -> None:
    settings = make_settings(shards=4, partitions=8, snapshot_every=150)
    system = start_system(settings, projections=False, policies=False)
    run = uuid.uuid4().hex[:6]

    first = [_place(run, i) for i in range(1000)]
    assert all(o.ok for o in system.submit_many(first))

    victim = system.shards["order"][1]
    before = ray.get(victim.dump.remote())
    assert len(before) > 100

    second: list[Any] = [_place(run, i) for i in range(1000, 1700)]
    second += [CancelOrder(order_id=f"{run}-{i}") for i in range(0, 600, 2)]
    outcomes: dict[str, Outcome] = {}

    def drive() -> None:
        for start in range(0, len(second), 20):
            batch = second[start : start + 20]
            time.sleep(0.01)
            for _attempt in range(5):
                try:
                    for cmd, outcome in zip(batch, system.submit_many(batch, timeout=60), strict=True):
                        outcomes[cmd.command_id] = outcome
                    break
                except ShardUnavailable:
                    time.sleep(1)  # resubmitting the same command ids is safe: shards deduplicate

    driver = threading.Thread(target=drive)
    driver.start()
    old_pid = ray.get(victim.info.remote())["pid"]
    while len(outcomes) < 300:
        time.sleep(0.005)
    ray.kill(victim, no_restart=False)
    assert len(outcomes) < len(second), "the kill must land mid-stream"

    driver.join(timeout=300)
    assert not driver.is_alive()

    info = ray.get(victim.ready.remote())
    assert info["pid"] != old_pid, "the shard actor was not restarted"
    assert info["rehydrated_events"] + info["rehydrated_snapshots"] > 0

    # Every command got an answer: none silently lost.
    assert len(outcomes) == len(second)
    assert all(isinstance(o, Accepted) for o in outcomes.values()), [o for o in outcomes.values() if not o.ok][:3]

    log = read_log(settings, "order-events")
    per_command = Counter(e.envelope.causation_id for e in log)
    assert len(log) == 2000
    assert all(per_command[c.command_id] == 1 for c in first + second)
    assert len({e.envelope.event_id for e in log}) == len(log)

    expected = fold_log(log)
    after: dict[str, tuple[Any, int]] = {}
    for shard in system.shards["order"]:
        after.update(ray.get(shard.dump.remote()))
    assert after == expected

    # The restarted shard's state for aggregates untouched since the kill equals the state before it.
    touched = {c.order_id for c in second}
    victim_after = ray.get(victim.dump.remote())
    assert {k: v for k, v in before.items() if k not in touched} == {
        k: v for k, v in victim_after.items() if k in before and k not in touched
    }

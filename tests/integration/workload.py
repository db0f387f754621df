"""A small, seeded order workload through the whole choreography, for read-side tests."""

from __future__ import annotations

import random
import time
from typing import Any

from choreography.system import System
from shop.messages import AddStock, CancelOrder, OrderLine, PlaceOrder

SKUS = [f"W-{i}" for i in range(12)]


def run_workload(system: System, run: str, orders: int, seed: int = 5) -> list[PlaceOrder]:
    """Seed stock, place `orders` orders with every failure path in the mix, return them."""
    rng = random.Random(seed)
    system.submit_many([AddStock(sku=s, quantity=10_000) for s in SKUS] + [AddStock(sku="W-rare", quantity=5)])
    places = []
    for i in range(orders):
        skus = rng.sample(SKUS, rng.randint(1, 3))
        if rng.random() < 0.08:
            skus[0] = "W-rare"
        roll = rng.random()
        places.append(
            PlaceOrder(
                order_id=f"{run}-{i}",
                customer_id=f"cust-{rng.randrange(40)}",
                lines=tuple(OrderLine(sku=s, quantity=rng.randint(1, 2), unit_price_cents=rng.randint(50, 900)) for s in skus),
                payment_token="tok_chargeDeclined" if roll < 0.08 else "tok_visa",
                shipping_address="nowhere" if 0.08 <= roll < 0.12 else "1 Main St",
            )
        )
    for start in range(0, len(places), 200):
        batch = places[start : start + 200]
        assert all(o.ok for o in system.submit_many(batch))
        system.submit_many([CancelOrder(order_id=p.order_id) for p in batch if rng.random() < 0.05])
    return places


def wait_settled(system: System, order_ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(system.state("order", oid)[0].terminal for oid in order_ids[-50:]) and all(
            s.terminal for s in _states(system, order_ids)
        ):
            return
        time.sleep(0.5)
    raise AssertionError("the workload did not settle")


def _states(system: System, order_ids: list[str]) -> list[Any]:
    import ray

    out = []
    for shard in system.shards["order"]:
        dump = ray.get(shard.dump.remote())
        out += [dump[o][0] for o in order_ids if o in dump]
    return out


def wait_projections_caught_up(system: System, log: list[Any], timeout: float = 120) -> None:
    for name in system.projection_hosts:
        topics = set(system.settings.projections[name].topics)
        system.wait_for(
            [e for e in log if e.topic.removeprefix(system.settings.topic_prefix) in topics],
            projection=name,
            timeout=timeout,
        )

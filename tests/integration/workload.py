"""A small, seeded order workload through the whole choreography, for read-side tests."""

from __future__ import annotations

import random
import time
from typing import Any

from confluent_kafka import Producer

from choreography.config import Settings
from choreography.system import System
from events.base import Envelope, new_id, utc_now
from events.log.topics import partition_for
from shop.messages import AddStock, CancelOrder, OrderLine, PlaceOrder
from shop.messages import registry as shop_registry
from shop.messages.inventory import StockAdded

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
                lines=tuple(
                    OrderLine(sku=s, quantity=rng.randint(1, 2), unit_price_cents=rng.randint(50, 900)) for s in skus
                ),
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


def append_stock_added(settings: Settings, skus: list[str]) -> None:
    """Append a StockAdded event per SKU straight to the inventory event log (no shard involved)."""
    registry = shop_registry()
    topic = settings.topic_name("inventory-events")
    partitions = settings.partitions("inventory")
    producer = Producer(settings.kafka.client_config())
    for sku in skus:
        env = Envelope(
            event_id=new_id(), event_type="StockAdded", aggregate_type="inventory", aggregate_id=sku, version=1,
            occurred_at=utc_now(), correlation_id=sku, causation_id=new_id(),
        )  # fmt: skip
        value = registry.encode_event(env, StockAdded(sku=sku, quantity=1))
        producer.produce(topic, key=sku.encode(), value=value, partition=partition_for(sku, partitions))
    assert producer.flush(10) == 0


def poll_until(runner: Any, events: int, timeout: float) -> None:
    """Poll a PolicyRunner until it has read `events` events or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while runner.events < events and time.monotonic() < deadline:
        runner.poll()

"""Dead letters redriven while orders flow through the whole choreography.

Mid-run the test parks letters of every stage: commands the inventory shard rejects (ShipStock for
side orders holding nothing, then made valid by reserving their stock), and policy and projection
letters for events already handled (a redrive of those must have no effect at all). `redrive` runs
while orders keep flowing; afterwards every invariant holds from the log, the side orders shipped
exactly once, no event store topic grew by a parked message, and a second redrive changes nothing."""

from __future__ import annotations

import random
import threading
import time
import uuid

import ray
from confluent_kafka import Producer

from choreography.system import System
from events.log.dlq import dead_letter_from, send_dead_letter
from events.log.topics import partition_for
from shop.invariants import audit
from shop.messages import AddStock, OrderLine, PlaceOrder
from shop.messages import registry as shop_registry
from shop.messages.inventory import ReserveStock, ShipStock, StockShipped
from tests.integration.conftest import read_log
from tests.integration.test_redrive import EVENT_TOPICS, event_counts, raw_messages
from tests.integration.workload import wait_projections_caught_up

ORDERS = 600
SKUS = [f"SKU-{i:02d}" for i in range(12)]
SIDE = 3
SERVICES = ("order", "inventory", "payment", "shipping")


def _orders(run: str, rng: random.Random) -> list[PlaceOrder]:
    return [
        PlaceOrder(
            order_id=f"{run}-{i}", customer_id=f"c-{rng.randrange(50)}",
            lines=tuple(OrderLine(sku=s, quantity=rng.randint(1, 2), unit_price_cents=rng.randint(100, 5000))
                        for s in rng.sample(SKUS, rng.choice((1, 2)))),
            payment_token="tok_chargeDeclined" if rng.random() < 0.1 else "tok_visa",
        )
        for i in range(ORDERS)
    ]  # fmt: skip


def _open_orders(system: System) -> int:
    states: dict = {}
    for shard in system.shards["order"]:
        states.update(ray.get(shard.dump.remote(), timeout=120))
    return sum(not s.terminal for s, _ in states.values())


def test_redrive_while_orders_flow_keeps_every_invariant(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=4, snapshot_every=500)
    system = start_system(settings, metrics=False)
    run = uuid.uuid4().hex[:6]
    registry = shop_registry()
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    system.submit_many([AddStock(sku=s, quantity=10_000) for s in SKUS])
    places = _orders(run, random.Random(7))
    started = time.perf_counter()

    def place(chunk: list[PlaceOrder]) -> None:
        for start in range(0, len(chunk), 50):
            assert all(o.ok for o in system.submit_many(chunk[start : start + 50]))
            time.sleep(0.1)

    place(places[:200])
    # Park letters of every stage while the flow goes on.
    side = [(f"{run}-side-sku-{i}", f"{run}-side-{i}") for i in range(SIDE)]
    for sku, order_id in side:
        ship = ShipStock(sku=sku, order_id=order_id, command_id=f"{order_id}-ship")
        producer.produce(settings.topic_name("inventory-commands"), key=sku.encode(),
                         value=registry.encode_command(ship), partition=partition_for(sku, 4))  # fmt: skip
    assert producer.flush(10) == 0
    early = [m for m in raw_messages(settings, "order-events") if (m.key() or b"").decode() in
             {p.order_id for p in places[:5]}][:5]  # fmt: skip
    for msg in early:
        for stage in ("policy inventory-0", "projection events_raw"):
            send_dead_letter(producer, settings.topic_name("choreo-dead-letters"),
                             dead_letter_from(msg, stage, "RuntimeError: injected"))  # fmt: skip
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 60
    while len(system.dead_letters()) < 2 * len(early) + SIDE:
        assert time.monotonic() < deadline, "the rejected ShipStock commands were not parked"
        time.sleep(0.3)
    parked = system.dead_letters()
    # The cause goes away: the side orders get their stock reserved the normal way. (The order
    # service, which never heard of them, parks the RecordStockReserved its policy sends back.)
    system.submit_many([AddStock(sku=sku, quantity=5) for sku, _ in side])
    system.submit_many(
        [ReserveStock(sku=sku, order_id=oid, quantity=2, command_id=f"{oid}-reserve") for sku, oid in side]
    )
    deadline = time.monotonic() + 60
    while len(system.dead_letters()) < len(parked) + SIDE:
        assert time.monotonic() < deadline, "the side orders' RecordStockReserved were not parked"
        time.sleep(0.3)
    unknown_orders = [letter for letter in system.dead_letters() if letter not in parked]
    assert all("not_found" in letter.error for letter in unknown_orders)

    # A projection's letter is redriven once the projection has read past it ("try later" before):
    # on a busy machine it may still be behind the early orders.
    wait_projections_caught_up(system, read_log(settings, "order-events"))
    flowing = threading.Thread(target=place, args=(places[200:],))
    flowing.start()
    time.sleep(0.5)
    results = system.redrive()  # --all, while orders flow
    flowing.join()
    outcome = {r.letter.letter_id: r.result for r in results}
    not_done = [(r.letter.stage, r.result, r.detail) for r in results if r.letter in parked and r.result != "done"]
    assert not_done == [], not_done
    assert {outcome[letter.letter_id] for letter in unknown_orders} == {"parked again"}, results
    assert len(system.dead_letters()) == len(parked) + 2 * SIDE

    deadline = time.monotonic() + 120
    while _open_orders(system):
        assert time.monotonic() < deadline, "orders did not settle"
        time.sleep(1)
    time.sleep(2)
    elapsed = time.perf_counter() - started

    before = event_counts(settings)
    again = system.redrive()
    assert {r.letter.letter_id: r.result for r in again if r.result != "skipped"} == {
        letter.letter_id: "parked again"
        for letter in system.dead_letters()[len(parked) + SIDE : len(parked) + 2 * SIDE]
    }
    time.sleep(2)
    assert event_counts(settings) == before, "a second redrive had an effect"

    log = [e for svc in SERVICES for e in read_log(settings, f"{svc}-events")]
    result = audit(log, order_ids=[p.order_id for p in places], skus=SKUS)
    print(f"\nredrive e2e: {ORDERS} orders in {elapsed:.1f}s, {len(parked)} letters redriven, {dict(result.outcomes)}")
    assert result.ok, result.violations
    assert result.orders == ORDERS
    # Unscoped, only the side SKUs differ (their orders are not in the log): no duplicate, no gap.
    assert all("-side-" in v for v in audit(log).violations), audit(log).violations
    shipped = [e for e in log if isinstance(e.payload, StockShipped) and e.payload.order_id.startswith(f"{run}-side")]
    assert sorted(e.payload.order_id for e in shipped) == sorted(oid for _, oid in side)
    parked_values = {letter.value for letter in parked}
    counts: dict[bytes | None, int] = {}
    for t in EVENT_TOPICS:
        for m in raw_messages(settings, t):
            counts[m.value()] = counts.get(m.value(), 0) + 1
    assert all(counts.get(v, 0) <= 1 for v in parked_values), "a parked message was appended to an event store"
    dupes = system.query("SELECT count() - uniqExact(event_id) FROM events_raw").scalar()
    assert dupes == 0

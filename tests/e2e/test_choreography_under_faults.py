"""5,000 orders through the whole choreography while shards and policy runners are killed, then
every command resubmitted after all shards were killed, with shards that keep at most 300
aggregates in memory.

When the run settles every invariant of the reference domain must hold, checked from the event
log alone: one terminal state per order, stock never negative and conserved, money captured -
refunded = confirmed totals, unique event ids, gap-free versions, an empty dead-letter topic."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import ray

from choreography.system import System
from choreography.traces import build_trace, render_tree
from events.base import Command, StoredEvent
from shop.invariants import audit
from shop.messages import AddStock, CancelOrder, OrderLine, PlaceOrder
from tests.integration.conftest import read_log

ORDERS = 5000
PLENTY = [f"SKU-{i:02d}" for i in range(30)]
SCARCE = [f"RARE-{i}" for i in range(5)]
SCARCE_UNITS = 12
KILL_EVERY_ORDERS = 200
CONFIRMED_HOPS = {
    "order OrderPlaced", "inventory reserve_each_line on OrderPlaced", "inventory ReserveStock",
    "payment capture_payment on OrderPaymentRequested", "payment CapturePayment",
    "shipping schedule_shipment on OrderPaid", "shipping ScheduleShipment",
    "inventory ship_reserved_stock on OrderConfirmed", "inventory ShipStock",
}  # fmt: skip


def build_orders(run: str, rng: random.Random) -> tuple[list[PlaceOrder], list[CancelOrder]]:
    places: list[PlaceOrder] = []
    cancels: list[CancelOrder] = []
    for i in range(ORDERS):
        skus = rng.sample(PLENTY, rng.choice((1, 2, 2, 3)))
        if rng.random() < 0.10:  # about 10% ask for scarce stock and mostly run out
            skus[0] = rng.choice(SCARCE)
        roll = rng.random()
        place = PlaceOrder(
            order_id=f"{run}-{i}",
            customer_id=f"customer-{rng.randrange(300)}",
            lines=tuple(
                OrderLine(sku=s, quantity=rng.randint(1, 3), unit_price_cents=rng.randint(100, 9000)) for s in skus
            ),
            payment_token="tok_chargeDeclined" if roll < 0.10 else "tok_visa",
            shipping_address="Nowhere Lane 0" if 0.10 <= roll < 0.15 else f"{i} Main St",
        )
        places.append(place)
        if rng.random() < 0.05:
            cancels.append(CancelOrder(order_id=place.order_id, reason="changed my mind"))
    return places, cancels


def order_states(system: System) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for shard in system.shards["order"]:
        states.update(ray.get(shard.dump.remote(), timeout=120))
    return states


def test_five_thousand_orders_survive_random_kills(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=8, snapshot_every=500)
    # A small memory budget: the shards evict (passivate) most orders mid-saga, deadlines included.
    services = {name: spec.model_copy(update={"max_aggregates": 300}) for name, spec in settings.services.items()}
    services["order"] = services["order"].model_copy(update={"deadline_s": 45.0})
    settings = settings.model_copy(update={"services": services})
    system = start_system(settings, projections=False)
    rng = random.Random(20261126)
    run = uuid.uuid4().hex[:6]

    stock = [AddStock(sku=s, quantity=100_000) for s in PLENTY] + [
        AddStock(sku=s, quantity=SCARCE_UNITS) for s in SCARCE
    ]
    assert all(o.ok for o in system.submit_many(stock))
    places, cancels = build_orders(run, rng)
    cancel_after = {c.order_id: c for c in cancels}

    started = time.perf_counter()
    errors: list[BaseException] = []

    first_outcomes: dict[str, Any] = {}
    answered = [0]

    def drive() -> None:
        try:
            for start in range(0, len(places), 250):
                batch: list[Command] = list(places[start : start + 250])
                outcomes = system.submit_many(batch, timeout=300)
                assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
                late = [cancel_after[p.order_id] for p in batch if p.order_id in cancel_after]
                outcomes += system.submit_many(late, timeout=300)  # some are rightly refused: already shipping
                first_outcomes.update((o.command_id, o) for o in outcomes)
                answered[0] += len(batch)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    victims = [
        *system.shards["order"],
        *system.shards["inventory"],
        *system.shards["payment"],
        *system.shards["shipping"],
        *[r for rs in system.policy_runners.values() for r in rs],
    ]
    driver = threading.Thread(target=drive)
    driver.start()
    # One kill a second, but never more than the progress allows: on a slow machine restarts take
    # longer, and killing at a fixed rate would then outpace recovery and test nothing but that.
    kills = 0
    while driver.is_alive() or kills < 6:
        time.sleep(1.0)
        if kills >= 6 + answered[0] // KILL_EVERY_ORDERS:
            continue
        victim = rng.choice(victims)
        ray.kill(victim, no_restart=False)
        kills += 1
    driver.join()
    assert not errors, errors

    # Settle: every order terminal and no event topic growing any more.
    deadline = time.monotonic() + 240
    last_size = -1
    while time.monotonic() < deadline:
        states = order_states(system)
        open_orders = [k for k, (s, _) in states.items() if not s.terminal]
        size = sum(len(read_log(settings, f"{svc}-events")) for svc in ("inventory", "payment", "shipping"))
        if not open_orders and size == last_size:
            break
        last_size = size
        time.sleep(2)
    elapsed = time.perf_counter() - started

    log = [e for svc in ("order", "inventory", "payment", "shipping") for e in read_log(settings, f"{svc}-events")]
    result = audit(log, order_ids=[p.order_id for p in places])
    print(
        f"\ne2e: {ORDERS} orders settled in {elapsed:.1f}s ({ORDERS / elapsed:.0f} orders/s), "
        f"{kills} kills survived, outcomes {dict(result.outcomes)}, {len(log)} events"
    )
    assert result.ok, result.violations
    assert result.orders == ORDERS
    assert sum(result.outcomes.values()) == ORDERS
    # The mix really exercised every path.
    assert result.outcomes["OrderConfirmed"] > ORDERS * 0.5
    assert result.outcomes["OrderRejected"] > 0
    assert result.outcomes["OrderCancelled"] > ORDERS * 0.1
    assert result.refunded_cents > 0
    assert kills >= 5
    assert system.dead_letters() == []

    # Every order's derived trace (built from the log as the read side builds it) is one tree
    # across the kills and restarts, each command under the policy reaction that sent it.
    wiring = {service: settings.wiring(service) for service in settings.services}
    sagas: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in log:
        sagas[event.envelope.correlation_id].append(event)
    for place in places:
        events = sagas[place.order_id]
        trace = build_trace(place.order_id, events, wiring)
        assert trace.connected, render_tree(trace)
        commands = {(e.envelope.aggregate_type, e.envelope.causation_id) for e in events}
        assert sum(s.kind == "SERVER" for s in trace.spans) == len(commands), render_tree(trace)
        assert not [s for s in trace.spans if " ? " in s.name or s.name.endswith(" command")], render_tree(trace)
        assert all(s.duration_ms >= -1 for s in trace.spans), render_tree(trace)  # ms-rounded Kafka times
        if any(e.envelope.event_type == "OrderConfirmed" for e in events):
            assert {s.name for s in trace.spans} >= CONFIRMED_HOPS, render_tree(trace)

    # Shard memory agrees with the log.
    states = order_states(system)
    assert all(states[p.order_id][0].terminal for p in places)

    # Resubmit everything after every shard was killed: each command has had its one effect, and
    # its caller gets the original outcome back, marked as a duplicate.
    shards = [a for actors in system.shards.values() for a in actors]
    for shard in shards:
        ray.kill(shard, no_restart=False)
    every: list[Command] = [*stock, *places, *cancels]
    again = system.submit_many(every, timeout=600)
    assert all(o.duplicate for o in again), [o for o in again if not o.duplicate][:3]
    for o in again[len(stock) :]:
        first = first_outcomes[o.command_id]
        assert (o.ok, getattr(o, "code", None)) == (first.ok, getattr(first, "code", None))
        if o.ok and first.events:
            assert [e.envelope.event_id for e in o.events] == [e.envelope.event_id for e in first.events]
    after = [e for svc in ("order", "inventory", "payment", "shipping") for e in read_log(settings, f"{svc}-events")]
    assert len(after) == len(log), "a resubmitted command took effect again"

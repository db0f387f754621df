"""Passivation on a real Kafka broker: an order shard with a budget of 1,000 aggregates in memory
decides 20,000 orders, their follow-ups and resubmits exactly as an unbounded one does, and
comes back from a restart with the same state."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

from actors.outcomes import Accepted, Outcome
from actors.shard import Shard
from choreography.config import Settings
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.base import Command
from shop.messages import registry as shop_registry
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder, RecordPaymentCaptured, RecordStockReserved

ORDERS = 20_000
BUDGET = 1_000
BATCH = 500
SKUS = ("A", "B", "C")


def workload(run: str) -> list[list[Command]]:
    """Batches of order commands: the places, then follow-ups touching random (mostly evicted)
    orders: reservations, payments, cancels and resubmits of earlier commands."""
    rng = random.Random(20261127)
    places = [
        PlaceOrder(
            order_id=f"{run}-{i}",
            customer_id=f"c{i % 97}",
            lines=(OrderLine(sku=SKUS[i % 3], quantity=1 + i % 4, unit_price_cents=100 + i % 900),),
        )
        for i in range(ORDERS)
    ]
    later: list[Command] = []
    for _ in range(ORDERS):
        place = rng.choice(places)
        roll = rng.random()
        if roll < 0.5:
            later.append(RecordStockReserved(order_id=place.order_id, sku=place.lines[0].sku))
        elif roll < 0.7:
            total = place.lines[0].quantity * place.lines[0].unit_price_cents
            later.append(RecordPaymentCaptured(order_id=place.order_id, amount_cents=total))
        elif roll < 0.85:
            later.append(CancelOrder(order_id=place.order_id))
        else:
            later.append(place)  # a resubmit: the original outcome comes back
    stream = places + later
    return [stream[start : start + BATCH] for start in range(0, len(stream), BATCH)]


def summary(outcome: Outcome) -> tuple[Any, ...]:
    if isinstance(outcome, Accepted):
        return ("accepted", outcome.duplicate, tuple(e.envelope.version for e in outcome.events))
    return ("rejected", outcome.code)


def order_shard(settings: Settings, budget: int | None) -> Shard:
    config = shard_config(settings, "order", 0).model_copy(update={"max_aggregates": budget})
    return Shard(config, settings.aggregate("order"), shop_registry())


def run_through(settings: Settings, budget: int | None, batches: list[list[Command]]) -> tuple[list[Any], Shard]:
    ensure_topics(settings)
    shard = order_shard(settings, budget)
    outcomes: list[Any] = []
    for batch in batches:
        outcomes += [summary(o) for o in shard.handle(batch)]
        if budget is not None:
            assert len(shard.entries) <= budget
    return outcomes, shard


def states(shard: Shard) -> dict[str, tuple[Any, int]]:
    return {k: (e.state, e.version) for k, e in shard.all_entries().items()}


def timeless(found: dict[str, tuple[Any, int]]) -> dict[str, tuple[dict[str, Any], int]]:
    """States without their clock readings (when an order was placed, when it expires), which
    differ between two runs."""
    return {
        k: ({f: v for f, v in state if not isinstance(v, datetime)}, version) for k, (state, version) in found.items()
    }


def test_a_budget_of_1000_aggregates_decides_20000_orders_as_an_unbounded_shard(make_settings) -> None:
    batches = workload(uuid.uuid4().hex[:6])
    unbounded_outcomes, unbounded = run_through(make_settings(shards=1, partitions=4), None, batches)
    expected = timeless(states(unbounded))
    unbounded.close()
    assert len(expected) == ORDERS

    settings = make_settings(shards=1, partitions=4)
    outcomes, bounded = run_through(settings, BUDGET, batches)
    assert outcomes == unbounded_outcomes
    assert {o[0] for o in outcomes} == {"accepted", "rejected"} and any(o[:2] == ("accepted", True) for o in outcomes)
    assert bounded.core.stored() >= ORDERS - BUDGET, "the evicted orders wait in the aggregate store"
    before = states(bounded)
    assert timeless(before) == expected
    bounded.close()

    restarted = order_shard(settings, BUDGET)
    assert len(restarted.entries) <= BUDGET
    assert states(restarted) == before
    originals = outcomes[-len(batches[-1]) :]
    resubmitted = [summary(o) for o in restarted.handle(batches[-1])]
    assert resubmitted == [("accepted", True, o[2]) if o[0] == "accepted" else o for o in originals]
    restarted.close()

"""Finding open sagas and the service that owes their next step, from the events and the wiring
alone (choreography/stuck.py), on the in-memory choreography of the shop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.aggregate import Aggregate
from choreography.cli.visibility import seconds
from choreography.config import load_settings
from choreography.lag import consumer_groups
from choreography.rescale import scaled_settings
from choreography.stuck import open_saga, owed_steps
from choreography.testing import EPOCH, InMemoryChoreography
from events.log.topics import policy_group
from shop.aggregates import PaymentAggregate, ShipmentAggregate, StockItemAggregate
from shop.aggregates.order import OrderAggregate
from shop.messages.inventory import AddStock
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder
from shop.policies import WIRING

LATER = EPOCH + timedelta(minutes=5)


def aggregates() -> dict[str, Aggregate[Any]]:
    return {
        "order": OrderAggregate(deadline=timedelta(seconds=60), clock=lambda: EPOCH),
        "inventory": StockItemAggregate(),
        "payment": PaymentAggregate(),
        "shipping": ShipmentAggregate(),
    }


def run(order_id: str, without: str | None = None, skus: tuple[str, ...] = ("a", "b")) -> InMemoryChoreography:
    """One order through the shop, with the `without` service's policy stage stopped."""
    wiring = {s: rows for s, rows in WIRING.items() if s != without}
    bus = InMemoryChoreography(aggregates(), wiring)
    bus.send(*(AddStock(sku=sku, quantity=5) for sku in skus)).run()
    lines = tuple(OrderLine(sku=sku, quantity=1, unit_price_cents=100) for sku in skus)
    bus.send(PlaceOrder(order_id=order_id, customer_id="c1", lines=lines, correlation_id=order_id)).run()
    return bus


def saga_events(bus: InMemoryChoreography, saga: str) -> list[Any]:
    return [e for e in bus.log if e.envelope.correlation_id == saga]


def test_a_finished_saga_is_not_open() -> None:
    bus = run("o1")
    assert "OrderConfirmed" in bus.event_types("o1")
    assert open_saga("o1", saga_events(bus, "o1"), aggregates(), WIRING, LATER) is None


def test_with_payments_policy_stage_stopped_payment_owes_the_next_step() -> None:
    bus = run("o2", without="payment")
    events = saga_events(bus, "o2")
    assert events[-1].envelope.event_type == "OrderPaymentRequested"
    saga = open_saga("o2", events, aggregates(), WIRING, LATER)
    assert saga is not None
    assert saga.owner == "payment"
    assert saga.root == ("order", "o2") and saga.root_terminal is False
    assert saga.next_step == "payment: capture_payment on OrderPaymentRequested -> CapturePayment"
    assert saga.last.envelope.event_type == "OrderPaymentRequested"
    assert saga.age_s == (LATER - events[-1].envelope.occurred_at).total_seconds()
    assert saga.as_dict()["owner"] == "payment"


def test_with_inventorys_policy_stage_stopped_inventory_owes_each_reservation() -> None:
    bus = run("o3", without="inventory")
    saga = open_saga("o3", saga_events(bus, "o3"), aggregates(), WIRING, LATER)
    assert saga is not None and saga.owner == "inventory"
    assert [len(step.commands) for step in saga.owed] == [2]  # one ReserveStock per line
    assert saga.next_step.startswith("inventory: reserve_each_line on OrderPlaced")


def test_with_shippings_policy_stage_stopped_a_paid_order_waits_on_shipping() -> None:
    bus = run("o4", without="shipping")
    assert bus.event_types("o4")[-1] == "OrderPaid"
    owed = owed_steps(saga_events(bus, "o4"), WIRING)
    assert [(step.service, step.policy) for step in owed] == [("shipping", "schedule_shipment")]


def test_a_terminal_root_with_an_owed_step_is_still_open() -> None:
    """The customer cancels while payment's stage is down: the order is cancelled (terminal), but
    payment still owes its reaction to the payment request."""
    bus = run("o6", without="payment")
    bus.send(CancelOrder(order_id="o6", reason="changed my mind", correlation_id="o6")).run()
    assert bus.event_types("o6")[-1] != "OrderPaymentRequested"
    saga = open_saga("o6", saga_events(bus, "o6"), aggregates(), WIRING, LATER)
    assert saga is not None and saga.root_terminal is True
    assert saga.owner == "payment" and saga.owed[0].policy == "capture_payment"


def test_an_order_waiting_only_on_itself_shows_its_deadline() -> None:
    """Every policy answered, but the order still waits (here: on nothing but its deadline)."""
    bus = InMemoryChoreography(aggregates(), {})  # no policy stage at all
    bus.send(AddStock(sku="a", quantity=5)).run()
    line = (OrderLine(sku="a", quantity=1, unit_price_cents=100),)
    bus.send(PlaceOrder(order_id="o5", customer_id="c1", lines=line, correlation_id="o5")).run()
    saga = open_saga("o5", saga_events(bus, "o5"), aggregates(), {}, LATER)
    assert saga is not None and not saga.owed
    assert saga.owner == "order"
    assert saga.deadline == EPOCH + timedelta(seconds=60)
    assert "deadline" in saga.next_step


def test_no_events_no_saga() -> None:
    assert open_saga("none", [], aggregates(), WIRING, datetime.now(UTC)) is None


def test_older_than_takes_durations_with_units_and_rejects_the_rest() -> None:
    assert [seconds(t) for t in ("30s", "5m", "1.5h", "250ms", "2d", "45")] == [30, 300, 5400, 0.25, 172800, 45]
    with pytest.raises(ValueError, match="not a duration"):
        seconds("soon")


def test_a_stopped_policy_stage_keeps_its_consumer_group_in_the_lag_report() -> None:
    """With its runners scaled to 0 a stage's events pile up: `choreo lag` and `choreo stuck`
    must still see its group, or the one place work waits is the one place nobody looks."""
    settings = load_settings(Path(__file__).resolve().parents[2] / "cluster.yaml")
    stopped = scaled_settings(settings, "payment", runners=0)
    groups = {group: (kind, topics) for group, kind, topics in consumer_groups(stopped)}
    assert groups[policy_group(settings.namespace, "payment")] == ("policy", ["order-events"])

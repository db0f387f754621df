"""The whole saga in memory: the four pure aggregates wired by the policy table, no Ray, no Kafka.

A tiny bus stands in for the shards and policy runners: it deduplicates command ids per service
(as each service's shards do), appends events with an envelope, and runs every service's wiring
on each stored event. Commands waiting on the bus may be taken in any order, which covers every
interleaving the real system allows: a command only exists once the event causing it was stored."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.aggregate import Aggregate
from choreography.testing import InMemoryChoreography
from shop.aggregates import PaymentAggregate, ShipmentAggregate, StockItemAggregate
from shop.aggregates.inventory import StockState
from shop.aggregates.order import OrderAggregate, OrderState, OrderStatus
from shop.aggregates.payment import PaymentState, PaymentStatus
from shop.aggregates.shipping import ShipmentState, ShipmentStatus
from shop.messages import ALL_EVENTS
from shop.messages.inventory import AddStock
from shop.messages.orders import CancelOrder, ExpireOrder, OrderLine, PlaceOrder
from shop.policies import WIRING

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class TickingClock:
    """Every reading is one second later than the previous one."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)


class Bus(InMemoryChoreography):
    """The shop's four services on the kit's in-memory bus, with a ticking clock for deadlines."""

    def __init__(self, rng: random.Random | None = None, deadline: timedelta | None = None) -> None:
        aggregates: dict[str, Aggregate[Any]] = {
            "order": OrderAggregate(deadline=deadline, clock=TickingClock()),
            "inventory": StockItemAggregate(),
            "payment": PaymentAggregate(),
            "shipping": ShipmentAggregate(),
        }
        super().__init__(aggregates, WIRING, rng)

    def order(self, order_id: str) -> OrderState:
        return self.state("order", order_id)

    def stock(self, sku: str) -> StockState:
        return self.state("inventory", sku)

    def payment(self, order_id: str) -> PaymentState:
        return self.state("payment", order_id)

    def shipment(self, order_id: str) -> ShipmentState:
        return self.state("shipping", order_id)


def place(order_id: str, lines: dict[str, int], token: str = "tok_visa", address: str = "1 Main St") -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        customer_id="c1",
        lines=tuple(OrderLine(sku=s, quantity=q, unit_price_cents=100) for s, q in lines.items()),
        payment_token=token,
        shipping_address=address,
        correlation_id=order_id,
    )


def stocked(**skus: int) -> Bus:
    bus = Bus()
    bus.send(*(AddStock(sku=sku, quantity=q) for sku, q in skus.items()))
    bus.run()
    return bus


# ---- one saga at a time ---------------------------------------------------------------


def test_happy_path_confirms_the_order_captures_payment_schedules_shipment_and_ships_stock() -> None:
    bus = stocked(A=5, B=5)
    bus.send(place("o1", {"A": 2, "B": 1}))
    bus.run()
    assert bus.order("o1").status is OrderStatus.CONFIRMED
    assert bus.payment("o1").status is PaymentStatus.CAPTURED
    assert bus.payment("o1").captured_cents == 300
    assert bus.shipment("o1").status is ShipmentStatus.SCHEDULED
    assert (bus.stock("A").shipped, bus.stock("A").available, bus.stock("A").reserved) == (2, 3, {})
    assert (bus.stock("B").shipped, bus.stock("B").available, bus.stock("B").reserved) == (1, 4, {})
    assert bus.event_types("o1")[-3:] == ["OrderConfirmed", "StockShipped", "StockShipped"]
    assert bus.rejections == []


def test_a_rejected_line_rejects_the_order_and_returns_the_reserved_stock() -> None:
    bus = stocked(A=5, B=1)
    bus.send(place("o1", {"A": 2, "B": 3}))
    bus.run()
    assert bus.order("o1").status is OrderStatus.REJECTED
    assert (bus.stock("A").available, bus.stock("A").reserved) == (5, {})
    assert bus.stock("B").available == 1
    assert bus.payment("o1").status is PaymentStatus.NONE
    assert "StockReleased" in bus.event_types("o1")


def test_a_declined_payment_cancels_the_order_and_returns_all_stock() -> None:
    bus = stocked(A=5, B=5)
    bus.send(place("o1", {"A": 2, "B": 1}, token="tok_chargeDeclined"))
    bus.run()
    assert bus.order("o1").status is OrderStatus.CANCELLED
    assert bus.payment("o1").status is PaymentStatus.DECLINED
    assert bus.shipment("o1").status is ShipmentStatus.NONE
    assert (bus.stock("A").available, bus.stock("B").available) == (5, 5)


def test_a_failed_shipment_cancels_the_order_refunds_the_payment_and_returns_all_stock() -> None:
    bus = stocked(A=5, B=5)
    bus.send(place("o1", {"A": 2, "B": 1}, address="Nowhere"))
    bus.run()
    assert bus.order("o1").status is OrderStatus.CANCELLED
    assert bus.payment("o1").status is PaymentStatus.REFUNDED
    assert bus.payment("o1").refunded_cents == 300
    assert bus.shipment("o1").status is ShipmentStatus.FAILED
    assert (bus.stock("A").available, bus.stock("B").available) == (5, 5)
    assert bus.stock("A").shipped == 0


def test_a_late_capture_after_a_customer_cancel_is_refunded() -> None:
    bus = stocked(A=5)
    bus.send(place("o1", {"A": 1}))
    while not any(isinstance(c, CancelOrder) for c in bus.queue):
        bus.step()
        if bus.order("o1").status is OrderStatus.PAYING:
            bus.send(CancelOrder(order_id="o1", correlation_id="o1"))
    bus.run()
    assert bus.order("o1").status is OrderStatus.CANCELLED
    assert bus.payment("o1").status is PaymentStatus.REFUNDED
    assert bus.stock("A").available == 5
    assert "StrayPaymentRefunded" in bus.event_types("o1")


# ---- many sagas, any interleaving -----------------------------------------------------


ADDED = {"A": 8, "B": 4, "C": 12}


def simulate(seed: int, past_dedup_window: bool = False) -> tuple[Bus, dict[str, PlaceOrder]]:
    """Twelve random orders racing for scarce stock, with declined cards, undeliverable addresses,
    customer cancels, expiries, restocks and redeliveries thrown in at random moments."""
    rng = random.Random(seed)
    bus = Bus(rng=rng, deadline=timedelta(seconds=1))
    bus.send(*(AddStock(sku=sku, quantity=q) for sku, q in ADDED.items()))
    bus.run()
    placed: dict[str, PlaceOrder] = {}
    for n in range(12):
        skus = rng.sample(sorted(ADDED), rng.randint(1, 3))
        command = place(
            f"o{n}",
            {sku: rng.randint(1, 3) for sku in skus},
            token=rng.choice(["tok_visa", "tok_visa", "tok_visa", "tok_insufficientFunds"]),
            address=rng.choice(["1 Main St", "1 Main St", "1 Main St", "nowhere"]),
        )
        placed[command.order_id] = command
        bus.send(command)
    for _ in range(5000):
        if not bus.queue:
            break
        bus.step()
        roll = rng.random()
        if roll < 0.02:
            bus.send(CancelOrder(order_id=rng.choice(sorted(placed))))
        elif roll < 0.05:
            bus.send(ExpireOrder(order_id=rng.choice(sorted(placed))))
        elif roll < 0.10 and (sent_by_policies := [c for c in bus.handled if c.causation_id]):
            again = rng.choice(sent_by_policies)
            if past_dedup_window:
                # Redelivered after the shard forgot its id: only the aggregate can tell.
                again = again.model_copy(update={"command_id": f"late-{again.command_id}"})
            bus.send(again)
        elif roll < 0.13:
            bus.send(AddStock(sku=rng.choice(sorted(ADDED)), quantity=rng.randint(1, 4)))
    bus.run()
    return bus, placed


def assert_every_order_ended_and_every_unit_and_cent_is_accounted_for(bus: Bus, placed: dict[str, PlaceOrder]) -> None:
    shipped = dict.fromkeys(ADDED, 0)
    for order_id, command in placed.items():
        order, payment, shipment = bus.order(order_id), bus.payment(order_id), bus.shipment(order_id)
        assert order.terminal, (order_id, order.status)
        confirmed = order.status is OrderStatus.CONFIRMED
        assert (payment.status is PaymentStatus.CAPTURED) == confirmed, (order_id, order.status, payment)
        assert (shipment.status is ShipmentStatus.SCHEDULED) == confirmed, (order_id, order.status, shipment)
        if confirmed:
            assert payment.captured_cents == order.total_cents
            for line in command.lines:
                shipped[line.sku] += line.quantity
        if payment.status is PaymentStatus.REFUNDED:
            assert payment.refunded_cents == payment.captured_cents
    for sku in ADDED:
        stock = bus.stock(sku)
        assert stock.reserved == {}, (sku, stock.reserved)
        assert stock.shipped == shipped[sku], sku
        assert stock.available == stock.added - shipped[sku], sku
    # Only customers' and the deadline's commands may be refused; no policy command ever is.
    for command, code in bus.rejections:
        assert isinstance(command, PlaceOrder | CancelOrder | ExpireOrder), (command, code)
        assert code in {"already_exists", "invalid_state", "not_due", "not_found"}, (command, code)


@pytest.mark.parametrize("seed", range(25))
def test_any_interleaving_of_many_sagas_ends_every_order_and_accounts_for_every_unit_and_cent(
    seed: int,
) -> None:
    assert_every_order_ended_and_every_unit_and_cent_is_accounted_for(*simulate(seed))


def test_the_random_interleavings_exercise_every_outcome_and_every_compensation() -> None:
    seen_events: set[str] = set()
    outcomes: set[str] = set()
    for seed in range(25):
        bus, placed = simulate(seed)
        seen_events |= {s.envelope.event_type for s in bus.log}
        for order_id in placed:
            order = bus.order(order_id)
            outcomes.add(order.reason.split(":")[0] if order.status is OrderStatus.CANCELLED else order.status)
    assert {e.type_name() for e in ALL_EVENTS} <= seen_events
    assert outcomes == {
        "confirmed", "rejected", "customer request", "deadline exceeded", "payment declined", "shipment failed",
    }  # fmt: skip


@pytest.mark.parametrize("seed", range(25))
def test_redeliveries_past_the_shards_dedup_window_are_absorbed_by_the_aggregates(seed: int) -> None:
    assert_every_order_ended_and_every_unit_and_cent_is_accounted_for(*simulate(seed, past_dedup_window=True))

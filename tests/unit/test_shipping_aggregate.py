"""Given-when-then tests of the pure Shipment aggregate: scheduled once, or failed, or called off."""

from __future__ import annotations

import pytest

from actors.aggregate import fold
from choreography.testing import given
from events.base import Command, Event
from shop.aggregates.shipping import UNDELIVERABLE, ShipmentAggregate, ShipmentState, ShipmentStatus
from shop.messages.inventory import ShipStock
from shop.messages.shipping import (
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)

SHIPMENT = ShipmentAggregate()
ADDRESS = "1 Main St, Springfield"
SCHEDULE = ScheduleShipment(order_id="o1", address=ADDRESS, items=3)
SCHEDULED = ShipmentScheduled(order_id="o1", tracking_id="TRK-o1", address=ADDRESS)
FAILED = ShipmentFailed(order_id="o1", reason="address undeliverable")
CANCELLED = ShipmentCancelled(order_id="o1", reason="order already ended")


def replay(*history: Event) -> ShipmentState:
    return fold(SHIPMENT, history)


# ---- scheduling ---------------------------------------------------------------------


def test_scheduling_a_deliverable_address_schedules_with_a_tracking_id() -> None:
    state = given(SHIPMENT).when(SCHEDULE).then(SCHEDULED)
    assert state.status is ShipmentStatus.SCHEDULED
    assert (state.order_id, state.tracking_id) == ("o1", "TRK-o1")


def test_the_tracking_id_derives_from_the_order_id() -> None:
    given(SHIPMENT).when(ScheduleShipment(order_id="o42", address="x", items=1)).then(
        ShipmentScheduled(order_id="o42", tracking_id="TRK-o42", address="x")
    )


@pytest.mark.parametrize("address", ["nowhere", "12 Nowhere Lane", "NOWHERE CITY", "Nowhereville"], ids=str.lower)
def test_an_address_containing_nowhere_fails_in_any_case(address: str) -> None:
    state = given(SHIPMENT).when(ScheduleShipment(order_id="o1", address=address, items=1)).then(FAILED)
    assert state.status is ShipmentStatus.FAILED
    assert state.tracking_id == ""


@pytest.mark.parametrize("address", ["Now here St", "Somewhere 5", "nowher"])
def test_an_address_merely_resembling_nowhere_is_scheduled(address: str) -> None:
    assert UNDELIVERABLE not in address.lower()
    given(SHIPMENT).when(ScheduleShipment(order_id="o1", address=address, items=1)).then(
        ShipmentScheduled(order_id="o1", tracking_id="TRK-o1", address=address)
    )


def test_a_shipment_without_items_is_refused_by_validation() -> None:
    with pytest.raises(ValueError, match="items"):
        ScheduleShipment(order_id="o1", address=ADDRESS, items=0)


@pytest.mark.parametrize(
    "history",
    [(SCHEDULED,), (FAILED,), (SCHEDULED, CANCELLED)],
    ids=["scheduled", "failed", "cancelled"],
)
def test_a_shipment_is_scheduled_only_once(history: tuple[Event, ...]) -> None:
    state = given(SHIPMENT, *history).when(SCHEDULE).then()
    assert state == replay(*history)


def test_a_failed_shipment_is_not_rescheduled_to_a_good_address() -> None:
    given(SHIPMENT, FAILED).when(ScheduleShipment(order_id="o1", address="2 Good Rd", items=1)).then()


# ---- cancelling ---------------------------------------------------------------------


def test_cancelling_a_scheduled_shipment_calls_it_off_and_keeps_its_tracking_id() -> None:
    state = given(SHIPMENT, SCHEDULED).when(CancelShipment(order_id="o1", reason="order already ended")).then(CANCELLED)
    assert state.status is ShipmentStatus.CANCELLED
    assert state.tracking_id == "TRK-o1"


@pytest.mark.parametrize("history", [(), (FAILED,), (SCHEDULED, CANCELLED)], ids=["none", "failed", "cancelled"])
def test_cancelling_a_shipment_that_is_not_scheduled_emits_nothing(history: tuple[Event, ...]) -> None:
    given(SHIPMENT, *history).when(CancelShipment(order_id="o1")).then()


def test_a_command_of_another_service_is_rejected_as_unsupported() -> None:
    given(SHIPMENT).when(ShipStock(sku="A", order_id="o1")).then_rejected("unsupported", match="ShipStock")


# ---- idempotent redelivery ----------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "command"),
    [
        pytest.param((), SCHEDULE, id="schedule"),
        pytest.param((), ScheduleShipment(order_id="o1", address="nowhere", items=1), id="fail"),
        pytest.param((SCHEDULED,), CancelShipment(order_id="o1", reason="r"), id="cancel"),
    ],
)
def test_a_redelivered_command_decided_against_the_evolved_state_emits_nothing(
    history: tuple[Event, ...], command: Command
) -> None:
    state = replay(*history)
    first = SHIPMENT.decide(state, command)
    assert len(first) == 1
    state = SHIPMENT.evolve(state, first[0])
    assert SHIPMENT.decide(state, command) == []

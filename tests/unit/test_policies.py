"""The choreography's pure policies and wiring table: which events make which service do what."""

from __future__ import annotations

import pytest

from choreography.policies import Meta, On, reacting_types, run_policies, source_services
from choreography.testing import reactions
from choreography.testing import stored as kit_stored
from events.base import Command, Event, StoredEvent
from shop.messages.inventory import (
    ReleaseStock,
    ReserveStock,
    ShipStock,
    StockAdded,
    StockReleased,
    StockReservationRejected,
    StockReserved,
    StockShipped,
)
from shop.messages.orders import (
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderLineRejected,
    OrderLineReserved,
    OrderPaid,
    OrderPaymentRequested,
    OrderPlaced,
    OrderRejected,
    RecordPaymentCaptured,
    RecordPaymentDeclined,
    RecordShipmentFailed,
    RecordShipmentScheduled,
    RecordStockRejected,
    RecordStockReserved,
    StrayPaymentRefunded,
    StrayReservationReleased,
    StrayShipmentCancelled,
)
from shop.messages.payment import CapturePayment, PaymentCaptured, PaymentDeclined, PaymentRefunded, RefundPayment
from shop.messages.shipping import (
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from shop.policies import WIRING

SERVICES = ("order", "inventory", "payment", "shipping")
EVENT_ID = "evt-1"
CORRELATION = "o1"
LINES = (
    OrderLine(sku="A", quantity=2, unit_price_cents=150),
    OrderLine(sku="B", quantity=1, unit_price_cents=99),
)
PLACED = OrderPlaced(order_id="o1", customer_id="c1", lines=LINES, total_cents=399, payment_token="tok_x")
CANCELLED = OrderCancelled(order_id="o1", reason="shipment failed: x", release_skus=("A", "B"), refund=True)
CANCELLED_UNPAID = OrderCancelled(order_id="o1", reason="customer request", release_skus=("A",), refund=False)

EVERY_EVENT: tuple[Event, ...] = (
    PLACED,
    OrderLineReserved(order_id="o1", sku="A"),
    OrderLineRejected(order_id="o1", sku="B", reason="x"),
    OrderPaymentRequested(order_id="o1", customer_id="c1", amount_cents=399, payment_token="tok_x"),
    OrderPaid(order_id="o1", amount_cents=399, shipping_address="1 Main St", lines=LINES),
    OrderConfirmed(order_id="o1", tracking_id="TRK-o1", skus=("A", "B")),
    OrderRejected(order_id="o1", reason="B: x", release_skus=("A",)),
    CANCELLED,
    CANCELLED_UNPAID,
    StrayReservationReleased(order_id="o1", sku="B"),
    StrayPaymentRefunded(order_id="o1", amount_cents=399),
    StrayShipmentCancelled(order_id="o1"),
    StockAdded(sku="A", quantity=5),
    StockReserved(sku="A", order_id="o1", quantity=2),
    StockReservationRejected(sku="B", order_id="o1", quantity=1, reason="unknown SKU"),
    StockReleased(sku="A", order_id="o1", quantity=2),
    StockShipped(sku="A", order_id="o1", quantity=2),
    PaymentCaptured(order_id="o1", customer_id="c1", amount_cents=399),
    PaymentDeclined(order_id="o1", amount_cents=399, reason="card declined"),
    PaymentRefunded(order_id="o1", amount_cents=399, reason="r"),
    ShipmentScheduled(order_id="o1", tracking_id="TRK-o1", address="1 Main St"),
    ShipmentFailed(order_id="o1", reason="address undeliverable"),
    ShipmentCancelled(order_id="o1", reason="r"),
)


def stored(event: Event, event_id: str = EVENT_ID, correlation_id: str = CORRELATION) -> StoredEvent:
    key = "sku" if event.aggregate_type == "inventory" else "order_id"
    return kit_stored(event, getattr(event, key), event_id=event_id, correlation_id=correlation_id)


def ids(n: int, event_id: str = EVENT_ID, correlation_id: str = CORRELATION) -> dict[str, str]:
    return {"command_id": f"{event_id}:{n}", "correlation_id": correlation_id, "causation_id": event_id}


def react(service: str, event: Event) -> list[Command]:
    return reactions(WIRING[service], stored(event))


# ---- the envelope metadata every command carries -------------------------------------


def test_meta_ids_number_commands_after_the_event_and_name_it_as_their_cause() -> None:
    assert Meta("e9", "corr").ids(3) == {"command_id": "e9:3", "correlation_id": "corr", "causation_id": "e9"}


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.type_name())
def test_every_command_carries_deterministic_ids_the_correlation_and_the_event_as_cause(event: Event) -> None:
    for service in SERVICES:
        commands = run_policies(WIRING[service], stored(event, event_id="e-42", correlation_id="saga-7"))
        assert [c.command_id for c in commands] == [f"e-42:{n}" for n in range(len(commands))], service
        assert all(c.correlation_id == "saga-7" for c in commands), service
        assert all(c.causation_id == "e-42" for c in commands), service


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.type_name())
def test_every_command_is_routed_to_the_service_whose_wiring_produced_it(event: Event) -> None:
    for service in SERVICES:
        assert all(c.target == service for c in react(service, event)), service


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.type_name())
def test_running_the_policies_twice_on_one_event_yields_the_same_commands(event: Event) -> None:
    for service in SERVICES:
        assert react(service, event) == react(service, event), service


def test_a_redelivered_event_with_another_id_yields_other_command_ids() -> None:
    first = run_policies(WIRING["inventory"], stored(PLACED, event_id="e1"))
    second = run_policies(WIRING["inventory"], stored(PLACED, event_id="e2"))
    assert [c.command_id for c in first] == ["e1:0", "e1:1"]
    assert [c.command_id for c in second] == ["e2:0", "e2:1"]


# ---- the wiring table ---------------------------------------------------------------


def test_the_wiring_covers_exactly_the_four_services() -> None:
    assert set(WIRING) == set(SERVICES)


@pytest.mark.parametrize(
    ("service", "sources"),
    [
        ("order", ["inventory", "payment", "shipping"]),
        ("inventory", ["order"]),
        ("payment", ["order"]),
        ("shipping", ["order"]),
    ],
)
def test_each_service_listens_to_the_other_services_never_to_itself(service: str, sources: list[str]) -> None:
    assert source_services(WIRING[service]) == sources
    assert service not in sources


@pytest.mark.parametrize("service", SERVICES)
def test_the_types_a_runner_decodes_are_exactly_those_its_policies_react_to(service: str) -> None:
    """A policy runner skips, undecoded, every other event type: whatever it skips, no policy of
    its service makes a command from."""
    every_type = {type(e) for e in EVERY_EVENT}
    decoded = reacting_types(WIRING[service], every_type)
    for event in EVERY_EVENT:
        makes_commands = bool(run_policies(WIRING[service], stored(event)))
        assert event.type_name() in decoded or not makes_commands, event
    assert decoded == {row.event.type_name() for row in WIRING[service]}


def test_a_row_on_a_base_class_reacts_to_its_subclasses() -> None:
    class Shipped(ShipmentScheduled):
        pass

    wiring = [On(ShipmentScheduled, lambda e, m: [])]
    assert reacting_types(wiring, [Shipped, ShipmentFailed]) == {"Shipped"}


def test_every_wired_event_type_is_exercised_by_these_tests() -> None:
    wired = {row.event for rows in WIRING.values() for row in rows}
    assert wired <= {type(e) for e in EVERY_EVENT}


@pytest.mark.parametrize("service", SERVICES)
def test_no_event_type_is_wired_twice_within_a_service(service: str) -> None:
    events = [row.event for row in WIRING[service]]
    assert len(events) == len(set(events))


def test_run_policies_runs_every_matching_row_in_order() -> None:
    def one(e: Event, m: Meta) -> list[Command]:
        return [CancelShipment(order_id="o1", reason="first", **m.ids(0))]

    def two(e: Event, m: Meta) -> list[Command]:
        return [CancelShipment(order_id="o1", reason="second", **m.ids(1))]

    wiring = [On(ShipmentFailed, one), On(ShipmentScheduled, two), On(ShipmentFailed, two)]
    commands = run_policies(wiring, stored(ShipmentFailed(order_id="o1", reason="x")))
    assert [c.reason for c in commands] == ["first", "second"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("service", "quiet"),
    [
        ("order", [StockAdded, StockReleased, StockShipped, PaymentRefunded, ShipmentCancelled, OrderPlaced]),
        ("inventory", [OrderLineReserved, OrderLineRejected, OrderPaid, StockReserved, StrayPaymentRefunded]),
        ("payment", [OrderPlaced, OrderRejected, OrderPaid, OrderConfirmed, PaymentCaptured]),
        ("shipping", [OrderPlaced, OrderCancelled, OrderConfirmed, StrayReservationReleased, ShipmentFailed]),
    ],
)
def test_a_service_ignores_the_events_it_is_not_wired_to(service: str, quiet: list[type[Event]]) -> None:
    for event in EVERY_EVENT:
        if type(event) in quiet:
            assert react(service, event) == [], event.type_name()


# ---- inventory reacts to orders -------------------------------------------------------


def test_order_placed_reserves_each_line_in_inventory() -> None:
    assert react("inventory", PLACED) == [
        ReserveStock(sku="A", order_id="o1", quantity=2, **ids(0)),
        ReserveStock(sku="B", order_id="o1", quantity=1, **ids(1)),
    ]


def test_order_rejected_releases_only_the_lines_it_lists() -> None:
    rejected = OrderRejected(order_id="o1", reason="B: x", release_skus=("A",))
    assert react("inventory", rejected) == [ReleaseStock(sku="A", order_id="o1", **ids(0))]


def test_an_order_rejected_with_nothing_reserved_releases_nothing() -> None:
    assert react("inventory", OrderRejected(order_id="o1", reason="x", release_skus=())) == []


def test_order_cancelled_releases_each_listed_line() -> None:
    assert react("inventory", CANCELLED) == [
        ReleaseStock(sku="A", order_id="o1", **ids(0)),
        ReleaseStock(sku="B", order_id="o1", **ids(1)),
    ]


def test_a_stray_reservation_releases_that_one_sku() -> None:
    event = StrayReservationReleased(order_id="o1", sku="B")
    assert react("inventory", event) == [ReleaseStock(sku="B", order_id="o1", **ids(0))]


def test_order_confirmed_ships_each_reserved_sku() -> None:
    event = OrderConfirmed(order_id="o1", tracking_id="TRK-o1", skus=("A", "B"))
    assert react("inventory", event) == [
        ShipStock(sku="A", order_id="o1", **ids(0)),
        ShipStock(sku="B", order_id="o1", **ids(1)),
    ]


# ---- payment reacts to orders ---------------------------------------------------------


def test_payment_requested_captures_the_amount_with_the_customers_token() -> None:
    event = OrderPaymentRequested(order_id="o1", customer_id="c1", amount_cents=399, payment_token="tok_x")
    assert react("payment", event) == [
        CapturePayment(order_id="o1", customer_id="c1", amount_cents=399, payment_token="tok_x", **ids(0))
    ]


def test_an_order_cancelled_with_refund_refunds_the_payment_giving_the_reason() -> None:
    assert react("payment", CANCELLED) == [RefundPayment(order_id="o1", reason="shipment failed: x", **ids(0))]


def test_an_order_cancelled_without_refund_leaves_the_payment_alone() -> None:
    assert react("payment", CANCELLED_UNPAID) == []


def test_a_stray_payment_is_refunded_because_the_order_already_ended() -> None:
    event = StrayPaymentRefunded(order_id="o1", amount_cents=399)
    assert react("payment", event) == [RefundPayment(order_id="o1", reason="order already ended", **ids(0))]


# ---- shipping reacts to orders --------------------------------------------------------


def test_order_paid_schedules_a_shipment_of_all_items_to_the_customers_address() -> None:
    event = OrderPaid(order_id="o1", amount_cents=399, shipping_address="7 Elm Rd", lines=LINES)
    assert react("shipping", event) == [ScheduleShipment(order_id="o1", address="7 Elm Rd", items=3, **ids(0))]


def test_a_stray_shipment_is_cancelled_because_the_order_already_ended() -> None:
    event = StrayShipmentCancelled(order_id="o1")
    assert react("shipping", event) == [CancelShipment(order_id="o1", reason="order already ended", **ids(0))]


# ---- the order reacts to inventory, payment and shipping ------------------------------


@pytest.mark.parametrize(
    ("event", "command"),
    [
        (
            StockReserved(sku="A", order_id="o1", quantity=2),
            RecordStockReserved(order_id="o1", sku="A", **ids(0)),
        ),
        (
            StockReservationRejected(sku="B", order_id="o1", quantity=1, reason="unknown SKU"),
            RecordStockRejected(order_id="o1", sku="B", reason="unknown SKU", **ids(0)),
        ),
        (
            PaymentCaptured(order_id="o1", customer_id="c1", amount_cents=399),
            RecordPaymentCaptured(order_id="o1", amount_cents=399, **ids(0)),
        ),
        (
            PaymentDeclined(order_id="o1", amount_cents=399, reason="card declined"),
            RecordPaymentDeclined(order_id="o1", reason="card declined", **ids(0)),
        ),
        (
            ShipmentScheduled(order_id="o1", tracking_id="TRK-o1", address="1 Main St"),
            RecordShipmentScheduled(order_id="o1", tracking_id="TRK-o1", **ids(0)),
        ),
        (
            ShipmentFailed(order_id="o1", reason="address undeliverable"),
            RecordShipmentFailed(order_id="o1", reason="address undeliverable", **ids(0)),
        ),
    ],
    ids=lambda x: x.type_name(),
)
def test_the_order_records_each_answer_of_another_service(event: Event, command: Command) -> None:
    assert react("order", event) == [command]

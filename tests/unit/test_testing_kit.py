"""The public test kit (choreography.testing) runs without pytest and says what went wrong."""

from __future__ import annotations

import pytest

from choreography.testing import InMemoryChoreography, InMemoryProjection, given, reactions
from shop.aggregates import OrderAggregate, PaymentAggregate, ShipmentAggregate, StockItemAggregate
from shop.messages import AddStock, CancelOrder, OrderLine, PlaceOrder
from shop.messages.inventory import ReserveStock
from shop.messages.orders import OrderPlaced
from shop.policies import INVENTORY_POLICIES, WIRING
from shop.projections.orders import OrdersProjection

LINE = OrderLine(sku="A", quantity=2, unit_price_cents=150)
PLACE = PlaceOrder(order_id="o1", customer_id="c1", lines=(LINE,))


def shop() -> InMemoryChoreography:
    aggregates = {"order": OrderAggregate(), "inventory": StockItemAggregate(), "payment": PaymentAggregate(),
                  "shipping": ShipmentAggregate()}  # fmt: skip
    return InMemoryChoreography(aggregates, WIRING)


def test_then_names_the_expected_and_the_actual_events() -> None:
    with pytest.raises(AssertionError, match="expected events") as caught:
        given(OrderAggregate()).when(PLACE).then()
    assert "OrderPlaced" in str(caught.value)


def test_then_rejected_names_a_wrong_code_and_an_unexpected_success() -> None:
    placed = OrderPlaced(order_id="o1", customer_id="c1", lines=(LINE,), total_cents=300)
    with pytest.raises(AssertionError, match="expected rejection 'not_found', got 'already_exists'"):
        given(OrderAggregate(), placed).when(PLACE).then_rejected("not_found")
    with pytest.raises(AssertionError, match="but the command produced"):
        given(OrderAggregate()).when(PLACE).then_rejected("already_exists")


def test_reactions_wrap_a_bare_event_with_deterministic_ids() -> None:
    placed = OrderPlaced(order_id="o1", customer_id="c1", lines=(LINE,), total_cents=300)
    (reserve,) = reactions(INVENTORY_POLICIES, placed, event_id="e-9", correlation_id="o1")
    assert reserve == ReserveStock(sku="A", order_id="o1", quantity=2, command_id="e-9:0", correlation_id="o1",
                                   causation_id="e-9")  # fmt: skip


def test_the_in_memory_choreography_runs_a_saga_and_dedups_resubmits() -> None:
    bus = shop().send(AddStock(sku="A", quantity=5)).run()
    bus.send(PLACE, PLACE).run()
    assert bus.state("order", "o1").status.value == "confirmed"
    assert bus.state("inventory", "A").available == 3
    assert bus.event_types("o1").count("OrderPlaced") == 1
    assert bus.send(CancelOrder(order_id="o1")).run().rejections[-1][1] == "invalid_state"


def test_commands_for_undeclared_services_are_refused() -> None:
    bus = InMemoryChoreography({"order": OrderAggregate()}, {})
    with pytest.raises(ValueError, match="undeclared service 'inventory'"):
        bus.send(AddStock(sku="A", quantity=1))


def test_the_in_memory_projection_keeps_rows_per_table() -> None:
    bus = shop().send(AddStock(sku="A", quantity=5), PLACE).run()
    orders = InMemoryProjection(OrdersProjection()).feed(bus.log, batch_size=3)
    latest = orders.latest("orders", "order_id")
    assert latest["o1"]["status"] == "confirmed"
    assert latest["o1"]["total_cents"] == 300
    order_events = [e for e in bus.log if e.envelope.aggregate_type == "order"]
    assert [row["version"] for row in orders.rows("orders")] == [e.version for e in order_events]

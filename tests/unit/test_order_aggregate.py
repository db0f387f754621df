"""Given-when-then tests of the pure Order aggregate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.order import OrderAggregate, OrderStatus
from events.orders import CancelOrder, OrderCancelled, OrderLine, OrderPlaced, PlaceOrder
from tests.given_when_then import given

ORDER = OrderAggregate()
LINES = (
    OrderLine(sku="A", quantity=2, unit_price_cents=150),
    OrderLine(sku="B", quantity=1, unit_price_cents=99),
)
PLACED = OrderPlaced(order_id="o1", customer_id="c1", lines=LINES, total_cents=399)


def test_placing_a_new_order_emits_order_placed_with_its_total() -> None:
    state = given(ORDER).when(PlaceOrder(order_id="o1", customer_id="c1", lines=LINES)).then(PLACED)
    assert state.status is OrderStatus.PLACED
    assert state.total_cents == 399


def test_placing_an_existing_order_is_rejected() -> None:
    given(ORDER, PLACED).when(PlaceOrder(order_id="o1", customer_id="c1", lines=LINES)).then_rejected(
        "already_exists", match="o1 already exists"
    )


def test_cancelling_a_placed_order_emits_order_cancelled() -> None:
    state = (
        given(ORDER, PLACED)
        .when(CancelOrder(order_id="o1", reason="changed mind"))
        .then(OrderCancelled(order_id="o1", reason="changed mind"))
    )
    assert state.status is OrderStatus.CANCELLED
    assert state.reason == "changed mind"


def test_cancelling_a_cancelled_order_is_rejected() -> None:
    given(ORDER, PLACED, OrderCancelled(order_id="o1", reason="x")).when(
        CancelOrder(order_id="o1")
    ).then_rejected("invalid_state", match="already cancelled")


def test_cancelling_an_unknown_order_is_rejected() -> None:
    given(ORDER).when(CancelOrder(order_id="nope")).then_rejected("not_found")


def test_evolve_is_pure_and_ignores_nothing_it_knows() -> None:
    before = ORDER.initial()
    after = ORDER.evolve(before, PLACED)
    assert before.status is OrderStatus.NEW
    assert after.lines == LINES


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {
                "order_id": "",
                "customer_id": "c",
                "lines": [{"sku": "A", "quantity": 1, "unit_price_cents": 1}],
            },
            "order_id",
        ),
        ({"order_id": "o", "customer_id": "c", "lines": []}, "lines"),
        (
            {
                "order_id": "o",
                "customer_id": "c",
                "lines": [{"sku": "A", "quantity": 0, "unit_price_cents": 1}],
            },
            "quantity",
        ),
        (
            {
                "order_id": "o",
                "customer_id": "c",
                "lines": [{"sku": "A", "quantity": 1, "unit_price_cents": -5}],
            },
            "unit_price_cents",
        ),
    ],
)
def test_malformed_place_order_is_refused_by_validation(data: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        PlaceOrder.model_validate(data)


def test_duplicate_skus_on_one_order_are_refused() -> None:
    line = {"sku": "A", "quantity": 1, "unit_price_cents": 1}
    with pytest.raises(ValidationError, match="only one line"):
        PlaceOrder.model_validate({"order_id": "o", "customer_id": "c", "lines": [line, line]})

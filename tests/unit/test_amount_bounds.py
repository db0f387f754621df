"""Amounts are bounded at the door, so every total the read side stores fits in Int64."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from events.registry import InvalidCommand
from shop.messages import OrderLine, PlaceOrder
from shop.messages import registry as shop_registry

INT64_MAX = 2**63 - 1


def _order(unit_price_cents: int, quantity: int = 1, lines: int = 1) -> dict[str, object]:
    return {
        "order_id": "o-1",
        "customer_id": "c-1",
        "lines": [{"sku": f"S-{i}", "quantity": quantity, "unit_price_cents": unit_price_cents} for i in range(lines)],
    }


def test_a_huge_unit_price_is_an_invalid_command_naming_the_field() -> None:
    with pytest.raises(InvalidCommand, match=r"lines\.0\.unit_price_cents"):
        shop_registry().parse_command("PlaceOrder", _order(10**30))


def test_direct_construction_with_a_huge_unit_price_fails_validation() -> None:
    with pytest.raises(ValidationError, match="unit_price_cents"):
        PlaceOrder(order_id="o-1", customer_id="c-1", lines=(OrderLine(sku="S", quantity=1, unit_price_cents=10**30),))


def test_the_largest_valid_order_fits_in_int64_with_margin() -> None:
    from shop.messages.orders import MAX_UNIT_PRICE_CENTS

    registry = shop_registry()
    biggest = registry.parse_command("PlaceOrder", _order(MAX_UNIT_PRICE_CENTS, quantity=10_000, lines=100))
    total = sum(line.quantity * line.unit_price_cents for line in biggest.lines)  # type: ignore[attr-defined]
    assert total * 1000 <= INT64_MAX
    with pytest.raises(InvalidCommand, match=r"lines\.0\.unit_price_cents"):
        registry.parse_command("PlaceOrder", _order(MAX_UNIT_PRICE_CENTS + 1))


def test_payment_amounts_on_commands_are_bounded() -> None:
    registry = shop_registry()
    with pytest.raises(InvalidCommand, match="amount_cents"):
        registry.parse_command(
            "CapturePayment", {"order_id": "o", "customer_id": "c", "amount_cents": 10**30, "payment_token": "t"}
        )
    with pytest.raises(InvalidCommand, match="amount_cents"):
        registry.parse_command("RecordPaymentCaptured", {"order_id": "o", "amount_cents": 10**30})


def test_added_stock_is_bounded() -> None:
    with pytest.raises(InvalidCommand, match="quantity"):
        shop_registry().parse_command("AddStock", {"sku": "S", "quantity": 10**30})


def test_reserved_stock_is_bounded() -> None:
    registry = shop_registry()
    with pytest.raises(InvalidCommand, match="quantity"):
        registry.parse_command("ReserveStock", {"sku": "S", "order_id": "o", "quantity": 10**30})

"""Malformed commands and domain violations give clear, typed errors; the shard keeps serving."""

from __future__ import annotations

import uuid

import pytest

from choreography.errors import CommandRejected, InvalidCommand
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder


def test_bad_input_is_rejected_clearly_and_the_shard_keeps_serving(make_settings, start_system) -> None:
    system = start_system(make_settings(shards=1, partitions=2), projections=False, policies=False)
    order_id = uuid.uuid4().hex

    with pytest.raises(InvalidCommand, match=r"lines\.0\.quantity: Input should be greater than 0"):
        system.submit_dict(
            "PlaceOrder",
            {
                "order_id": order_id,
                "customer_id": "c",
                "lines": [{"sku": "A", "quantity": 0, "unit_price_cents": 1}],
            },
        )
    with pytest.raises(InvalidCommand, match="unknown command type 'Teleport'"):
        system.submit_dict("Teleport", {})

    placed = system.submit_dict(
        "PlaceOrder",
        {
            "order_id": order_id,
            "customer_id": "c",
            "lines": [{"sku": "A", "quantity": 1, "unit_price_cents": 1}],
        },
    )
    assert [e.envelope.event_type for e in placed] == ["OrderPlaced"]
    assert placed[0].version == 1

    system.submit(CancelOrder(order_id=order_id))
    with pytest.raises(CommandRejected) as info:
        system.submit(CancelOrder(order_id=order_id))
    assert info.value.code == "invalid_state"
    assert "already cancelled" in info.value.reason

    with pytest.raises(CommandRejected, match="already_exists"):
        system.submit(
            PlaceOrder(
                order_id=order_id,
                customer_id="c",
                lines=(OrderLine(sku="A", quantity=1, unit_price_cents=1),),
            )
        )

    # Still serving, and the rejected commands left no trace in the aggregate.
    state, version = system.state("order", order_id)
    assert version == 2
    assert state.status.value == "cancelled"
    other = system.submit(
        PlaceOrder(
            order_id=order_id + "-2",
            customer_id="c",
            lines=(OrderLine(sku="B", quantity=2, unit_price_cents=3),),
        )
    )
    assert other[0].payload.total_cents == 6


def test_resubmitting_the_same_command_id_is_idempotent(make_settings, start_system) -> None:
    system = start_system(make_settings(shards=1, partitions=2), projections=False, policies=False)
    cmd = PlaceOrder(
        order_id=uuid.uuid4().hex,
        customer_id="c",
        lines=(OrderLine(sku="A", quantity=1, unit_price_cents=1),),
    )
    first = system.submit_many([cmd])[0]
    again = system.submit_many([cmd])[0]
    assert first.ok and again.ok and again.duplicate
    assert again.events == first.events
    assert system.state("order", cmd.order_id)[1] == 1

"""The event codec: round trips, headers, upcasting and clear decode errors."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from events import DecodeError, InvalidCommand
from events.base import Envelope, Event, utc_now
from events.registry import TYPE_HEADER, VERSION_HEADER, Registry, event_headers
from shop.messages import registry as shop_registry
from shop.messages.orders import OrderLine, OrderPlaced


def _envelope(event: Event) -> Envelope:
    return Envelope(
        event_id="e1", event_type=event.type_name(), aggregate_type="order", aggregate_id="o1",
        version=1, occurred_at=utc_now(), correlation_id="o1", causation_id="c1",
        schema_version=event.schema_version,
    )  # fmt: skip


def test_event_round_trips_with_envelope_and_position() -> None:
    registry = shop_registry()
    event = OrderPlaced(
        order_id="o1",
        customer_id="c1",
        lines=(OrderLine(sku="A", quantity=1, unit_price_cents=5),),
        total_cents=5,
    )
    env = _envelope(event)
    stored = registry.decode_event(registry.encode_event(env, event), "order-events", 3, 42)
    assert stored.payload == event
    assert stored.envelope == env
    assert (stored.topic, stored.partition, stored.offset) == ("order-events", 3, 42)


def test_headers_carry_type_and_schema_version() -> None:
    env = _envelope(OrderPlaced(order_id="o", customer_id="c", lines=(), total_cents=0))
    assert dict(event_headers(env)) == {TYPE_HEADER: b"OrderPlaced", VERSION_HEADER: b"2"}


class Renamed(Event):
    schema_version: ClassVar[int] = 2
    new_name: str
    extra: int = 0


def test_upcasters_run_on_read_from_old_versions() -> None:
    registry = Registry(events=[Renamed])
    registry.add_upcaster("Renamed", 1, lambda d: {"new_name": d["old_name"]})
    env = _envelope(Renamed(new_name="x")).model_copy(update={"schema_version": 1})
    raw = json.dumps({"envelope": env.model_dump(mode="json"), "payload": {"old_name": "kept"}}).encode()
    stored = registry.decode_event(raw, "t", 0, 0)
    assert stored.payload == Renamed(new_name="kept")
    assert stored.envelope.schema_version == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"not json", "undecodable"),
        (b'{"envelope": {"event_type": "Nope"}, "payload": {}}', "unknown event type"),
        (b'{"envelope": {"event_type": "OrderPlaced"}, "payload": {"order_id": 1}}', "undecodable"),
    ],
)
def test_poison_bytes_raise_decode_error_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        shop_registry().decode_event(raw, "t", 0, 0)


def test_parse_command_names_the_bad_field() -> None:
    with pytest.raises(InvalidCommand, match=r"lines\.0\.quantity"):
        shop_registry().parse_command(
            "PlaceOrder",
            {
                "order_id": "o",
                "customer_id": "c",
                "lines": [{"sku": "A", "quantity": -1, "unit_price_cents": 1}],
            },
        )


def test_unknown_command_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidCommand, match=r"known: .*CancelOrder, .*PlaceOrder"):
        shop_registry().parse_command("ShipIt", {})

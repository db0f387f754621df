"""Schema evolution: OrderPlaced v1 -> v2 upcasting on read, and the JSON-schema compatibility check."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from choreography.policies import run_policies
from events import Registry
from events.base import Envelope
from events.schemas import (
    compatibility_errors,
    current_schemas,
    load_snapshot,
    main,
    render,
)
from shop.aggregates.order import OrderAggregate, OrderStatus
from shop.messages import ALL_COMMANDS, ALL_EVENTS
from shop.messages import registry as shop_registry
from shop.messages.inventory import ReserveStock
from shop.messages.orders import (
    OrderLine,
    OrderPaid,
    OrderPlaced,
    PlaceOrder,
    RecordPaymentCaptured,
    RecordStockReserved,
)
from shop.messages.upcasters import order_placed_v1_to_v2
from shop.policies import WIRING

FIXTURE = Path(__file__).parent.parent / "fixtures" / "order_placed_v1.jsonl"
SNAPSHOT_PATH = Path(__file__).resolve().parents[2] / "shop" / "schemas.snapshot.json"
REGISTRY = ["--registry", "shop.messages:registry"]


def _v1_messages() -> list[bytes]:
    return [line for line in FIXTURE.read_bytes().splitlines() if line.strip()]


V1_MESSAGES = _v1_messages()


# ---- the committed v1 fixture ---------------------------------------------------------


def test_the_fixture_really_holds_varied_v1_order_placed_payloads() -> None:
    raws = [json.loads(m) for m in V1_MESSAGES]
    assert 5 <= len(raws) <= 8
    for raw in raws:
        assert raw["envelope"]["event_type"] == "OrderPlaced"
        assert raw["envelope"]["schema_version"] == 1
        assert "shipping_address" in raw["payload"]
        assert "ship_to" not in raw["payload"] and "currency" not in raw["payload"]
    deadlines = [raw["payload"]["deadline_at"] for raw in raws]
    assert None in deadlines and any(d is not None for d in deadlines)
    assert {len(raw["payload"]["lines"]) for raw in raws} == {1, 2, 3}
    assert len({raw["payload"]["shipping_address"] for raw in raws}) == len(raws)


@pytest.mark.parametrize("message", V1_MESSAGES, ids=lambda m: json.loads(m)["envelope"]["aggregate_id"])
def test_a_stored_v1_order_placed_decodes_as_v2(message: bytes) -> None:
    raw = json.loads(message)
    old = raw["payload"]
    stored = shop_registry().decode_event(message, "order-events", 2, 17)

    assert isinstance(stored.payload, OrderPlaced)
    assert stored.payload.ship_to == old["shipping_address"]
    assert stored.payload.currency == "USD"
    assert stored.envelope.schema_version == 2
    assert stored.payload.order_id == old["order_id"] == stored.envelope.aggregate_id
    assert stored.payload.customer_id == old["customer_id"]
    assert stored.payload.total_cents == old["total_cents"]
    assert stored.payload.payment_token == old["payment_token"]
    assert [line.model_dump() for line in stored.payload.lines] == old["lines"]
    expected_deadline = old["deadline_at"] and datetime.fromisoformat(old["deadline_at"])
    assert stored.payload.deadline_at == (expected_deadline or None)
    # Only the schema version moves; the rest of the envelope is as stored.
    envelope = dict(raw["envelope"], schema_version=2)
    assert stored.envelope == Envelope.model_validate(envelope)
    assert (stored.topic, stored.partition, stored.offset) == ("order-events", 2, 17)


@pytest.mark.parametrize("message", V1_MESSAGES, ids=lambda m: json.loads(m)["envelope"]["aggregate_id"])
def test_rehydrating_from_a_v1_event_keeps_the_shipping_address(message: bytes) -> None:
    old = json.loads(message)["payload"]
    stored = shop_registry().decode_event(message, "order-events", 0, 0)
    aggregate = OrderAggregate()

    state = aggregate.evolve(aggregate.initial(), stored.payload)

    assert state.status is OrderStatus.RESERVING
    assert state.shipping_address == old["shipping_address"]
    assert state.currency == "USD"
    assert state.order_id == old["order_id"]
    assert state.total_cents == old["total_cents"]
    assert state.payment_token == old["payment_token"]


def test_an_order_rehydrated_from_v1_ships_to_its_original_address() -> None:
    message = V1_MESSAGES[1]
    old = json.loads(message)["payload"]
    assert old["shipping_address"] == "7 Elm Rd, Shelbyville"
    placed = shop_registry().decode_event(message, "order-events", 0, 0).payload
    aggregate = OrderAggregate()
    state = aggregate.evolve(aggregate.initial(), placed)

    for line in old["lines"]:
        for event in aggregate.decide(state, RecordStockReserved(order_id=old["order_id"], sku=line["sku"])):
            state = aggregate.evolve(state, event)
    assert state.status is OrderStatus.PAYING
    events = aggregate.decide(state, RecordPaymentCaptured(order_id=old["order_id"], amount_cents=2349))

    assert len(events) == 1 and isinstance(events[0], OrderPaid)
    assert events[0].shipping_address == "7 Elm Rd, Shelbyville"


def test_policies_react_to_a_decoded_v1_order_placed() -> None:
    message = V1_MESSAGES[2]
    old = json.loads(message)["payload"]
    stored = shop_registry().decode_event(message, "order-events", 0, 0)

    commands = run_policies(WIRING["inventory"], stored)

    assert [type(c) for c in commands] == [ReserveStock] * len(old["lines"])
    assert [(c.sku, c.quantity) for c in commands if isinstance(c, ReserveStock)] == [
        (line["sku"], line["quantity"]) for line in old["lines"]
    ]


def test_a_registry_without_the_upcaster_cannot_read_v1() -> None:
    bare = Registry(events=ALL_EVENTS, commands=ALL_COMMANDS)
    with pytest.raises(ValueError, match="no upcaster for OrderPlaced v1 -> v2"):
        bare.decode_event(V1_MESSAGES[0], "order-events", 0, 0)


def test_the_upcaster_is_pure_and_renames_the_address() -> None:
    v1 = json.loads(V1_MESSAGES[0])["payload"]
    before = copy.deepcopy(v1)

    v2 = order_placed_v1_to_v2(v1)

    assert v1 == before
    assert v2["ship_to"] == v1["shipping_address"]
    assert v2["currency"] == "USD"
    assert "shipping_address" not in v2
    assert {k: v for k, v in v2.items() if k not in ("ship_to", "currency")} == {
        k: v for k, v in v1.items() if k != "shipping_address"
    }


def test_a_v1_payload_without_an_address_gets_the_old_default() -> None:
    v2 = order_placed_v1_to_v2({"order_id": "o", "customer_id": "c", "lines": [], "total_cents": 0})
    assert OrderPlaced.model_validate(v2) == OrderPlaced(
        order_id="o", customer_id="c", lines=(), total_cents=0, ship_to="", currency="USD"
    )


# ---- v2 -------------------------------------------------------------------------------


def _envelope(event: OrderPlaced) -> Envelope:
    return Envelope(
        event_id="e1", event_type="OrderPlaced", aggregate_type="order", aggregate_id=event.order_id,
        version=1, occurred_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), correlation_id="o2",
        causation_id="c1", schema_version=event.schema_version,
    )  # fmt: skip


def test_a_v2_order_placed_round_trips_unchanged() -> None:
    registry = shop_registry()
    event = OrderPlaced(
        order_id="o2",
        customer_id="c2",
        lines=(OrderLine(sku="A", quantity=2, unit_price_cents=500),),
        total_cents=1000,
        payment_token="tok_amex",
        ship_to="4 Rue de Rivoli, Paris",
        currency="EUR",
        deadline_at=datetime(2025, 1, 2, 3, 5, 5, tzinfo=UTC),
    )
    env = _envelope(event)
    raw = registry.encode_event(env, event)
    assert json.loads(raw)["envelope"]["schema_version"] == 2

    stored = registry.decode_event(raw, "order-events", 1, 9)

    assert stored.payload == event
    assert stored.envelope == env
    assert json.loads(raw)["payload"]["ship_to"] == "4 Rue de Rivoli, Paris"


def test_place_order_carries_its_currency_onto_the_event_and_state() -> None:
    aggregate = OrderAggregate(deadline=timedelta(seconds=30), clock=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    line = OrderLine(sku="A", quantity=1, unit_price_cents=700)
    command = PlaceOrder(order_id="o9", customer_id="c9", lines=(line,), shipping_address="9 Oak Ave", currency="GBP")

    [event] = aggregate.decide(aggregate.initial(), command)
    state = aggregate.evolve(aggregate.initial(), event)

    assert isinstance(event, OrderPlaced)
    assert (event.currency, event.ship_to) == ("GBP", "9 Oak Ave")
    assert (state.currency, state.shipping_address) == ("GBP", "9 Oak Ave")
    assert PlaceOrder(order_id="o", customer_id="c", lines=(line,)).currency == "USD"


@pytest.mark.parametrize("currency", ["usd", "US", "EURO", "", "U$D"])
def test_currency_must_be_a_three_letter_upper_case_code(currency: str) -> None:
    line = OrderLine(sku="A", quantity=1, unit_price_cents=1)
    with pytest.raises(ValidationError, match="currency"):
        PlaceOrder(order_id="o", customer_id="c", lines=(line,), currency=currency)
    with pytest.raises(ValidationError, match="currency"):
        OrderPlaced(order_id="o", customer_id="c", lines=(line,), total_cents=1, currency=currency)


# ---- the JSON-schema compatibility check ----------------------------------------------


@pytest.fixture
def schemas() -> dict[str, dict[str, Any]]:
    """The current schemas after a JSON round trip, like a snapshot loaded from disk."""
    loaded: dict[str, dict[str, Any]] = json.loads(render(current_schemas(shop_registry())))
    return loaded


def _props(schemas: dict[str, dict[str, Any]], event_type: str) -> dict[str, Any]:
    props: dict[str, Any] = schemas[event_type]["schema"]["properties"]
    return props


def test_the_committed_snapshot_is_compatible_with_the_current_models() -> None:
    snapshot = load_snapshot(SNAPSHOT_PATH)
    assert snapshot["OrderPlaced"]["schema_version"] == 2
    assert set(snapshot) == {cls.type_name() for cls in ALL_EVENTS}
    assert compatibility_errors(snapshot, current_schemas(shop_registry()), shop_registry()) == []


def test_the_snapshot_records_every_event_with_its_version(schemas: dict[str, dict[str, Any]]) -> None:
    assert set(schemas) == {cls.type_name() for cls in ALL_EVENTS}
    assert schemas["OrderPlaced"]["schema_version"] == 2
    assert {"ship_to", "currency"} <= set(_props(schemas, "OrderPlaced"))
    assert compatibility_errors(schemas, copy.deepcopy(schemas), shop_registry()) == []


def test_removing_a_required_property_is_incompatible(schemas: dict[str, dict[str, Any]]) -> None:
    new = copy.deepcopy(schemas)
    schema = new["OrderCancelled"]["schema"]
    del schema["properties"]["reason"]
    schema["required"].remove("reason")

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == ["OrderCancelled v1: required property 'reason' was removed"]


def test_changing_a_property_type_is_incompatible(schemas: dict[str, dict[str, Any]]) -> None:
    new = copy.deepcopy(schemas)
    _props(new, "OrderPlaced")["customer_id"] = {"title": "Customer Id", "type": "integer"}

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == ["OrderPlaced v2.customer_id: type changed from string to integer"]


def test_changing_a_nested_model_field_type_is_incompatible(schemas: dict[str, dict[str, Any]]) -> None:
    new = copy.deepcopy(schemas)
    new["OrderPlaced"]["schema"]["$defs"]["OrderLine"]["properties"]["quantity"]["type"] = "string"

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == ["OrderPlaced v2.lines[].quantity: type changed from integer to string"]


def test_making_an_optional_value_non_nullable_is_incompatible(schemas: dict[str, dict[str, Any]]) -> None:
    new = copy.deepcopy(schemas)
    _props(new, "OrderPlaced")["deadline_at"] = {"format": "date-time", "type": "string"}

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == ["OrderPlaced v2.deadline_at: type changed from null | string (date-time) to string (date-time)"]


def test_a_newly_required_property_at_the_same_version_is_incompatible(
    schemas: dict[str, dict[str, Any]],
) -> None:
    new = copy.deepcopy(schemas)
    new["OrderPlaced"]["schema"]["required"].append("currency")
    schema = new["OrderCancelled"]["schema"]
    schema["properties"]["operator"] = {"title": "Operator", "type": "string"}
    schema["required"].append("operator")

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == [
        "OrderCancelled v1: new property 'operator' is required; stored events lack it",
        "OrderPlaced v2: property 'currency' became required",
    ]


def test_a_version_bump_without_an_upcaster_is_incompatible(schemas: dict[str, dict[str, Any]]) -> None:
    new = copy.deepcopy(schemas)
    new["OrderCancelled"]["schema_version"] = 2
    del _props(new, "OrderCancelled")["refund"]

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == ["OrderCancelled: schema_version went from v1 to v2 but no upcaster is registered for v1 -> v2"]


def test_a_version_bump_with_an_upcaster_accepts_the_new_shape(schemas: dict[str, dict[str, Any]]) -> None:
    old = copy.deepcopy(schemas)  # what the v1 snapshot looked like
    old["OrderPlaced"]["schema_version"] = 1
    props = _props(old, "OrderPlaced")
    props["shipping_address"] = props.pop("ship_to")
    del props["currency"]

    assert compatibility_errors(old, schemas, shop_registry()) == []
    bare = Registry(events=ALL_EVENTS, commands=ALL_COMMANDS)
    assert compatibility_errors(old, schemas, bare) == [
        "OrderPlaced: schema_version went from v1 to v2 but no upcaster is registered for v1 -> v2"
    ]
    # Without the version bump the same change is a removed property.
    same_version = copy.deepcopy(schemas)
    same_version["OrderPlaced"]["schema_version"] = 1
    assert compatibility_errors(old, same_version, shop_registry()) == [
        "OrderPlaced v1: property 'shipping_address' was removed"
    ]


def test_removing_an_event_type_or_lowering_its_version_is_incompatible(
    schemas: dict[str, dict[str, Any]],
) -> None:
    new = copy.deepcopy(schemas)
    del new["StrayShipmentCancelled"]
    new["OrderPlaced"]["schema_version"] = 1

    errors = compatibility_errors(schemas, new, shop_registry())

    assert errors == [
        "OrderPlaced: schema_version went down from v2 to v1",
        "StrayShipmentCancelled: event type was removed, its stored events could not be read",
    ]


def test_adding_an_optional_property_or_event_type_is_compatible(schemas: dict[str, dict[str, Any]]) -> None:
    new = copy.deepcopy(schemas)
    _props(new, "OrderCancelled")["note"] = {"default": "", "title": "Note", "type": "string"}
    new["OrderArchived"] = copy.deepcopy(new["OrderCancelled"])

    assert compatibility_errors(schemas, new, shop_registry()) == []


# ---- the command line -----------------------------------------------------------------


def test_check_passes_on_the_committed_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--snapshot", str(SNAPSHOT_PATH), *REGISTRY]) == 0
    assert capsys.readouterr().out == "OK\n"


def test_check_fails_with_one_line_per_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = tmp_path / "schemas.snapshot.json"
    assert main(["--write", "--snapshot", str(snapshot), *REGISTRY]) == 0
    assert json.loads(snapshot.read_text()) == json.loads(render(current_schemas(shop_registry())))
    capsys.readouterr()
    broken = json.loads(snapshot.read_text())
    broken["OrderGhosted"] = broken["OrderCancelled"]  # a type the code no longer has
    broken["OrderPlaced"]["schema"]["required"].remove("customer_id")  # now newly required
    snapshot.write_text(json.dumps(broken))

    assert main(["--check", "--snapshot", str(snapshot), *REGISTRY]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "OrderGhosted: event type was removed, its stored events could not be read",
        "OrderPlaced v2: property 'customer_id' became required",
    ]

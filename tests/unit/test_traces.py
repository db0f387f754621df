"""Derived traces (choreography/traces.py): a saga's spans from its events and the wiring alone,
on the in-memory choreography of the shop, with each event given the timestamps a shard gives it."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from datetime import datetime, timedelta

from choreography.testing import EPOCH, InMemoryChoreography
from choreography.traces import Trace, build_trace, render_tree
from events.base import StoredEvent
from events.tracing import trace_id
from shop.messages.inventory import AddStock
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder
from shop.policies import WIRING
from tests.unit.test_stuck import aggregates

WAIT_MS, DECIDE_MS = 40, 3
"""Each command waits 40 ms after its cause's decision before its shard takes it, and is decided
3 ms later."""


def timed(log: list[StoredEvent]) -> list[StoredEvent]:
    """The log with the times shards would give it: a policy's command is taken WAIT_MS after the
    decision of its cause, any other WAIT_MS after the decision before it, and decided DECIDE_MS
    after it is taken (the in-memory bus takes commands in order, so causes come first)."""
    out: list[StoredEvent] = []
    decided: dict[str, datetime] = {}
    at, last_cmd = EPOCH, None
    taken = EPOCH
    for event in log:
        command_id = event.envelope.causation_id
        if command_id != last_cmd:  # the next command
            taken = decided.get(command_id.rpartition(":")[0], at) + timedelta(milliseconds=WAIT_MS)
            at = taken + timedelta(milliseconds=DECIDE_MS)
            last_cmd = command_id
        decided[event.envelope.event_id] = at
        env = event.envelope.model_copy(
            update={"occurred_at": at, "event_id": hexed(event.envelope.event_id), "causation_id": hexed(command_id)}
        )
        out.append(replace(event, envelope=env, timestamp_ms=round(taken.timestamp() * 1000)))
    return out


def hexed(some_id: str) -> str:
    """The in-memory bus's event id `ev<n>` (and a policy's command id `ev<n>:<k>`) with the event
    id as the shards make it: 32 hex digits."""
    head, sep, k = some_id.partition(":")
    return hashlib.sha256(head.encode()).hexdigest()[:32] + sep + k if head.startswith("ev") else some_id


def shop(order_id: str, *then: CancelOrder, without: str = "") -> list[StoredEvent]:
    """One order through the shop (with the `without` service's policy stage stopped), then `then`."""
    bus = InMemoryChoreography(aggregates(), {s: rows for s, rows in WIRING.items() if s != without})
    bus.send(AddStock(sku="a", quantity=5), AddStock(sku="b", quantity=5)).run()
    lines = tuple(OrderLine(sku=s, quantity=1, unit_price_cents=100) for s in ("a", "b"))
    bus.send(PlaceOrder(order_id=order_id, customer_id="c1", lines=lines, correlation_id=order_id)).run()
    bus.send(*then).run()
    return timed([e for e in bus.log if e.envelope.correlation_id == order_id])


def shape(trace: Trace) -> list[tuple[int, str]]:
    """(depth, name) of every span, depth first."""
    out: list[tuple[int, str]] = []

    def walk(span: object, depth: int) -> None:
        out.append((depth, span.name))  # type: ignore[attr-defined]
        for child in span.children:  # type: ignore[attr-defined]
            walk(child, depth + 1)

    for root in trace.roots:
        walk(root, 0)
    return out


def test_a_confirmed_order_is_one_tree_of_every_command_and_reaction() -> None:
    events = shop("o1")
    trace = build_trace("o1", events, WIRING)
    assert trace.connected and trace.trace_id == trace_id("o1")
    commands = {(e.envelope.aggregate_type, e.envelope.causation_id) for e in events}
    assert sum(s.kind == "SERVER" for s in trace.spans) == len(commands)
    assert all(s.parent_span_id for s in trace.spans if s is not trace.roots[0])
    assert shape(trace)[:4] == [
        (0, "order OrderPlaced"),
        (1, "inventory reserve_each_line on OrderPlaced"),
        (2, "inventory ReserveStock"),
        (3, "order record_reservation on StockReserved"),
    ]
    names = {name for _, name in shape(trace)}
    for hop in ("payment capture_payment on OrderPaymentRequested", "payment CapturePayment",
                "shipping schedule_shipment on OrderPaid", "shipping ScheduleShipment",
                "inventory ship_reserved_stock on OrderConfirmed"):  # fmt: skip
        assert hop in names, (hop, sorted(names))
    reserve = next(s for s in trace.spans if s.name == "inventory reserve_each_line on OrderPlaced")
    assert len(reserve.children) == 2, "one reaction, a ReserveStock per line"


def test_each_hop_splits_into_waiting_in_kafka_and_processing() -> None:
    trace = build_trace("o2", shop("o2"), WIRING)
    hops = trace.hops()
    assert hops
    for reaction, command in hops:
        assert command.duration_ms == DECIDE_MS
        assert command.attributes["choreo.processing_ms"] == f"{DECIDE_MS:.1f}"
        assert reaction.start <= command.start <= reaction.end
    lonely = [(r, c) for r, c in hops if len(r.children) == 1]
    assert lonely and all(r.duration_ms == WAIT_MS for r, _ in lonely)
    assert all(c.attributes["choreo.waiting_ms"] == f"{WAIT_MS:.1f}" for _, c in lonely)


def test_the_trace_is_the_same_whatever_order_the_events_come_in() -> None:
    events = shop("o3")
    shuffled = list(events)
    random.Random(7).shuffle(shuffled)
    one, two = build_trace("o3", events, WIRING), build_trace("o3", shuffled, WIRING)
    assert [(s.span_id, s.parent_span_id, s.name) for s in one.spans] == [
        (s.span_id, s.parent_span_id, s.name) for s in two.spans
    ]


def test_a_later_client_command_hangs_under_its_aggregates_last_command() -> None:
    cancel = CancelOrder(order_id="o4", reason="changed my mind", correlation_id="o4", command_id="cancel:12345")
    events = shop("o4", cancel, without="payment")  # the order waits on its payment: it can cancel
    trace = build_trace("o4", events, WIRING)
    assert trace.connected
    cancelled = next(s for s in trace.spans if s.name == "order OrderCancelled")
    parent = next(s for s in trace.spans if s.span_id == cancelled.parent_span_id)
    assert parent.service == "order" and parent.kind == "SERVER"
    assert parent.attributes["choreo.aggregate_id"] == "o4"
    assert "outside the saga" in cancelled.attributes["choreo.cause"]
    assert [c.name for r in cancelled.children for c in r.children] == ["inventory ReleaseStock"] * 2


def test_a_missing_cause_breaks_the_tree_and_the_render_says_so() -> None:
    events = shop("o5")
    placed = next(e for e in events if e.envelope.event_type == "OrderPlaced")
    trace = build_trace("o5", [e for e in events if e is not placed], WIRING)
    assert not trace.connected
    assert "NOT CONNECTED" in render_tree(trace)[1]


def test_the_rendered_tree_shows_each_hops_waiting_and_processing() -> None:
    lines = render_tree(build_trace("o6", shop("o6"), WIRING))
    assert lines[0] == f"saga o6  trace {trace_id('o6')}"
    assert lines[2].endswith(f"order OrderPlaced -> OrderPlaced  [processing {DECIDE_MS} ms]")
    assert "└─ inventory reserve_each_line on OrderPlaced  [waiting 40 ms]" in lines[3]
    assert any("├─ inventory ReserveStock -> StockReserved  [processing 3 ms]" in line for line in lines)

"""`choreo stuck` / `System.stuck()`: with payment's policy stage stopped, the orders waiting on it
are listed with payment as the owner of their next step and the lag it waits on; once the stage
runs again they finish and the list empties. Meanwhile the order shard is killed too, and then
`choreo trace` / `System.trace()` shows each of those orders as one tree with every hop, the
payment hop's waiting covering the stop. Real Kafka, Ray and ClickHouse."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import ray

from choreography.cli import main
from choreography.cli import visibility as visibility_cli
from choreography.stuck import StuckSaga
from choreography.traces import Trace, render_tree
from events.tracing import trace_id
from shop.messages.inventory import AddStock
from shop.messages.orders import OrderLine, PlaceOrder


def _orders(run: str, batch: str, n: int) -> list[PlaceOrder]:
    line = (OrderLine(sku=f"{run}-sku", quantity=1, unit_price_cents=250),)
    return [PlaceOrder(order_id=f"{run}{batch}-{i}", customer_id="c1", lines=line) for i in range(n)]


def _eventually(system: Any, wanted: Callable[[list[StuckSaga]], bool], timeout: float, what: str) -> list[StuckSaga]:
    """`system.stuck(older_than_s=0)` once it is what is `wanted`; AssertionError with the last list."""
    deadline = time.monotonic() + timeout
    found: list[StuckSaga] = []
    while time.monotonic() < deadline:
        found = system.stuck(older_than_s=0)
        if wanted(found):
            return found
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout}s; last seen: {[s.as_dict() for s in found]}")


def _confirmed_in_events_raw(system: Any, order_ids: list[str], timeout: float = 120) -> None:
    sql = "SELECT count() FROM events_raw WHERE event_type = 'OrderConfirmed' AND correlation_id IN %(ids)s"
    deadline = time.monotonic() + timeout
    while system.query(sql, {"ids": order_ids}).scalar() < len(order_ids):
        assert time.monotonic() < deadline, f"the orders {order_ids} were not confirmed within {timeout}s"
        time.sleep(0.5)


def test_stuck_names_payment_while_its_policy_stage_is_stopped_and_empties_after_restart(
    make_settings: Any, start_system: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(shards=1, partitions=2)
    services = dict(settings.services)
    services["order"] = services["order"].model_copy(update={"deadline_s": 900.0})  # no expiry mid-test
    system = start_system(settings.model_copy(update={"services": services}), metrics=False)
    run = uuid.uuid4().hex[:6]
    system.submit_many([AddStock(sku=f"{run}-sku", quantity=100)])
    finished = _orders(run, "a", 3)
    system.submit_many(finished)

    def none_stuck(found: list[StuckSaga]) -> bool:
        return not found

    _confirmed_in_events_raw(system, [o.order_id for o in finished])
    _eventually(system, none_stuck, 120, "the first orders finish and none is stuck")

    system.scale_runners("payment", 0)
    waiting = _orders(run, "b", 4)
    system.submit_many(waiting)
    ids = sorted(o.order_id for o in waiting)

    def all_waiting(found: list[StuckSaga]) -> bool:
        return sorted(s.saga_id for s in found) == ids

    stuck = _eventually(system, all_waiting, 120, "the orders placed while payment's stage is stopped are listed")
    for saga in stuck:
        assert saga.owner == "payment", saga.as_dict()
        assert saga.next_step == "payment: capture_payment on OrderPaymentRequested -> CapturePayment"
        assert saga.last.envelope.event_type in ("OrderPaymentRequested", "OrderCancelled")
        assert len(saga.waiting_on) == len(saga.owed) >= 1
        assert saga.waiting_on[0].startswith("lag: payment's policy stage has not consumed"), saga.waiting_on
        assert "payment runs no policy runner" in saga.waiting_on[0]

    @contextmanager
    def this_system(config: Any, **options: Any) -> Iterator[Any]:
        yield system

    monkeypatch.setattr(visibility_cli, "running_system", this_system)
    with pytest.raises(SystemExit) as listed:
        main(["stuck", "--older-than", "0s", "--json"])
    assert listed.value.code == 1
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(row["saga_id"] for row in printed) == ids
    assert {row["owner"] for row in printed} == {"payment"}
    assert {row["next_step"] for row in printed} == {
        "payment: capture_payment on OrderPaymentRequested -> CapturePayment"
    }
    with pytest.raises(SystemExit) as table:
        main(["stuck", "--older-than", "0s"])
    assert table.value.code == 1 and "Stuck sagas" in capsys.readouterr().out

    ray.kill(system.shards["order"][0], no_restart=False)  # mid-saga: Ray restarts it
    stopped_s = 3.0
    time.sleep(stopped_s)
    system.scale_runners("payment", 1)
    _eventually(system, none_stuck, 180, "after payment's stage restarts, every saga finishes and the list empties")
    main(["stuck", "--older-than", "0s"])  # exit 0: nothing stuck
    assert "no saga" in capsys.readouterr().out

    # Each order's derived trace is one tree with every hop, across the stop and the restart.
    _confirmed_in_events_raw(system, ids)
    unset, late = system.query(
        "SELECT countIf(toUnixTimestamp64Milli(kafka_timestamp) = 0), countIf(kafka_timestamp > occurred_at) "
        "FROM events_raw"
    ).rows[0]
    assert (unset, late) == (0, 0), "every event's Kafka timestamp is when its shard took the command"
    for order_id in ids:
        trace = system.trace(order_id)
        assert trace.connected, render_tree(trace)
        assert chain(trace) == HOPS, render_tree(trace)
        assert all(s.duration_ms >= 0 for s in trace.spans), render_tree(trace)
        payment = next(r for r, _ in trace.hops() if r.name.startswith("payment capture_payment"))
        assert payment.duration_ms >= stopped_s * 1000, render_tree(trace)
    main(["trace", ids[0]])
    printed = capsys.readouterr().out
    assert f"saga {ids[0]}  trace {trace_id(ids[0])}" in printed
    assert "└─ payment capture_payment on OrderPaymentRequested  [waiting " in printed, printed
    spans = [json.loads(line) for line in _json_trace(ids[0], capsys)]
    assert len(spans) == len(HOPS) and {s["trace_id"] for s in spans} == {trace_id(ids[0])}
    with pytest.raises(SystemExit) as unknown:
        main(["trace", "no-such-order"])
    assert unknown.value.code == 1


HOPS = [
    "order OrderPlaced",
    "inventory reserve_each_line on OrderPlaced", "inventory ReserveStock",
    "order record_reservation on StockReserved", "order RecordStockReserved",
    "payment capture_payment on OrderPaymentRequested", "payment CapturePayment",
    "order record_capture on PaymentCaptured", "order RecordPaymentCaptured",
    "shipping schedule_shipment on OrderPaid", "shipping ScheduleShipment",
    "order record_shipment on ShipmentScheduled", "order RecordShipmentScheduled",
    "inventory ship_reserved_stock on OrderConfirmed", "inventory ShipStock",
]  # fmt: skip
"""The spans of a one-line order that is confirmed, root first: each is the only child of the one
before it."""


def chain(trace: Trace) -> list[str]:
    """The span names from the root down, while each span has exactly one child."""
    names, span = [], trace.roots[0]
    while True:
        names.append(span.name)
        if len(span.children) != 1:
            return names
        span = span.children[0]


def _json_trace(saga_id: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    main(["trace", saga_id, "--json"])
    return capsys.readouterr().out.splitlines()

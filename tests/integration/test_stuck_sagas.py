"""`choreo stuck` / `System.stuck()`: with payment's policy stage stopped, the orders waiting on it
are listed with payment as the owner of their next step and the lag it waits on; once the stage
runs again they finish and the list empties. Real Kafka, Ray and ClickHouse."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from choreography.cli import main
from choreography.cli import visibility as visibility_cli
from choreography.stuck import StuckSaga
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
    system = start_system(make_settings(shards=1, partitions=2), metrics=False)
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

    system.scale_runners("payment", 1)
    _eventually(system, none_stuck, 180, "after payment's stage restarts, every saga finishes and the list empties")
    main(["stuck", "--older-than", "0s"])  # exit 0: nothing stuck
    assert "no saga" in capsys.readouterr().out

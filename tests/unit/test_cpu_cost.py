"""The loadtest's CPU cost model: CPU used between two samples per role, per order and per core,
and the Kafka transactions committed per order."""

from __future__ import annotations

import os

import pytest

from choreography.cpu import cost, proc_cpu_s


def test_cost_per_role_counts_a_restarted_process_from_zero_and_adds_up() -> None:
    before = {"order shards": {10: (5.0, 100), 11: (2.0, 40)}, "client": {1: (1.0, 0)}}
    after = {"order shards": {10: (7.0, 400), 12: (1.5, 50)}, "client": {1: (1.5, 0)}}  # 11 died, 12 replaced it
    rows = {r["role"]: r for r in cost(before, after, orders=500, seconds=10.0)}
    assert rows["order shards"]["cpu_s"] == pytest.approx(2.0 + 1.5)
    assert rows["order shards"]["processes"] == 2
    assert rows["order shards"]["cpu_ms_per_order"] == pytest.approx(7.0)
    assert rows["client"]["share_of_one_core"] == pytest.approx(0.05)
    assert rows["total"]["cpu_s"] == pytest.approx(4.0) and rows["total"]["processes"] == 3
    assert rows["order shards"]["transactions"] == 300 + 50
    assert rows["total"]["transactions_per_order"] == pytest.approx(350 / 500)
    assert rows["client"]["transactions"] == 0
    assert list(rows)[-1] == "total"
    assert cost(before, after, orders=0, seconds=0)[-1]["cpu_ms_per_order"] == 0.0


def test_a_process_cpu_time_is_read_from_proc() -> None:
    sum(i * i for i in range(300_000))  # burn a little CPU
    mine = proc_cpu_s(os.getpid())
    times = os.times()
    assert mine is not None and 0 < mine <= times.user + times.system + 0.05
    assert proc_cpu_s(2**22 + 12345) is None

"""Rebuilding a projection never leaves its live tables short: they keep serving while fresh tables
catch up, and a crash at any step of the rebuild leaves complete per-minute totals after restart."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

from shop.messages.payment import PaymentCaptured, PaymentRefunded
from tests.integration.conftest import read_log
from tests.integration.workload import run_workload, wait_projections_caught_up, wait_settled

SALES_CLASS = "shop.projections.sales:SalesProjection"
SALES = {"sales_per_minute": {"projection": SALES_CLASS, "topics": ["payment-events"], "batch_size": 25}}
CRASH_SALES = {"sales_per_minute": {"projection": SALES_CLASS, "topics": ["payment-events"], "batch_size": 100}}
CRASHED = 17


def _money(settings) -> tuple[int, int]:
    log = read_log(settings, "payment-events")
    captured = sum(e.payload.amount_cents for e in log if isinstance(e.payload, PaymentCaptured))
    refunded = sum(e.payload.amount_cents for e in log if isinstance(e.payload, PaymentRefunded))
    return captured, refunded


def _settled_system(make_settings, start_system, orders: int):
    settings = make_settings(shards=1, partitions=2, projections=SALES)
    system = start_system(settings, metrics=False)
    placed = run_workload(system, uuid.uuid4().hex[:6], orders)
    wait_settled(system, [p.order_id for p in placed])
    wait_projections_caught_up(system, read_log(settings, "payment-events"))
    return settings, system


def test_the_live_tables_keep_serving_during_a_rebuild(make_settings, start_system) -> None:
    settings, system = _settled_system(make_settings, start_system, 150)
    captured, refunded = _money(settings)
    full = system.query("SELECT count() FROM sales_payments").scalar()
    assert full > 0
    sql = "SELECT (SELECT count() FROM sales_payments), sum(captured), sum(refunded) FROM sales_per_minute"
    assert system.query(sql).rows[0] == (full, captured, refunded)

    system.pause_projection("sales_per_minute")  # hold the rebuild at its start, to observe it
    system.rebuild_projection("sales_per_minute")
    assert system.projection_status()["sales_per_minute"]["rebuild"] is not None
    assert system.query(sql).rows[0] == (full, captured, refunded)
    system.resume_projection("sales_per_minute")
    deadline = time.monotonic() + 120
    while system.projection_status()["sales_per_minute"]["rebuild"] is not None:
        assert system.query(sql).rows[0] == (full, captured, refunded)
        assert time.monotonic() < deadline, "the rebuild did not finish"
        time.sleep(0.02)
    assert system.projection_status()["sales_per_minute"].get("rebuild") is None
    assert system.query(sql).rows[0] == (full, captured, refunded)


# ---- a crash at every step of a rebuild ---------------------------------------------------


def _host_process(args: dict[str, Any], crash_at: int | None, results: Any) -> None:
    """One life of a projection host: recover, finish whatever rebuild is pending, report the
    totals, then start a rebuild that dies (like kill -9) at its `crash_at`-th write to ClickHouse."""
    from confluent_kafka import Consumer

    from events.log.kafka_io import consumer_config, end_offsets
    from projections.host import ProjectionHost

    host = ProjectionHost(args["dsn"], args["kafka"], args["namespace"], args["prefix"], CRASH_SALES, args["messages"])
    consumer = Consumer(consumer_config(args["kafka"], "rebuild-test"))
    ends = end_offsets(consumer, [f"{args['prefix']}payment-events"])
    consumer.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = host.status()["sales_per_minute"]
        done = all(status["positions"].get(k, 0) >= end - 1 for k, end in ends.items())
        if done and status.get("rebuild") is None:
            break
        time.sleep(0.05)
    results.put(host.query("SELECT sum(captured), sum(refunded) FROM sales_per_minute").rows[0])
    results.close()  # os._exit below would drop a result still in the queue's feeder thread
    results.join_thread()
    if crash_at is None:
        host.stop()
        return
    writes = 0

    def crashing(method: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            nonlocal writes
            writes += 1
            if writes >= crash_at:
                os._exit(CRASHED)
            return method(*a, **kw)

        return call

    host.sink.command = crashing(host.sink.command)  # type: ignore[method-assign]
    host.sink.insert = crashing(host.sink.insert)  # type: ignore[method-assign]
    host.rebuild("sales_per_minute")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and host.status()["sales_per_minute"].get("rebuild") is not None:
        time.sleep(0.05)
    host.stop()


def test_a_crash_at_any_step_of_a_rebuild_never_leaves_the_totals_short(
    make_settings, start_system, tmp_path: Path
) -> None:
    settings, _system = _settled_system(make_settings, start_system, 120)
    want = _money(settings)
    assert want[0] > 0
    args = {
        "dsn": f"chdb://{tmp_path / 'replica'}", "kafka": settings.kafka.client_config(),
        "namespace": f"{settings.namespace}-replica", "prefix": settings.topic_prefix,
        "messages": settings.messages_paths(),
    }  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    crash_at = 1
    while True:
        life = ctx.Process(target=_host_process, args=(args, crash_at, results))
        life.start()
        life.join(180)
        assert results.get(timeout=5) == want, f"totals short after a crash at write {crash_at - 1}"
        if life.exitcode != CRASHED:
            assert life.exitcode == 0
            break
        crash_at += 1
        assert crash_at < 60
    final = ctx.Process(target=_host_process, args=(args, None, results))
    final.start()
    final.join(180)
    assert results.get(timeout=5) == want
    assert crash_at > 3, "the rebuild never got far enough to crash in the middle"

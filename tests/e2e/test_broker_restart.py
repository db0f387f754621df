"""SIGKILL the broker twice while orders flow, and bring it back: the write side serves again
within 30 s of the broker's return, no caller sees an undocumented error, every saga ends, every
invariant holds, and the read side holds every event exactly once. Runs against a private broker
so other tests keep theirs."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import ray

from choreography.broker import LocalBroker
from choreography.config import KafkaSettings
from choreography.errors import ShardUnavailable
from shop.invariants import audit
from shop.messages import AddStock, OrderLine, PlaceOrder
from tests.e2e.faults import free_ports, sigkill
from tests.integration.conftest import read_log
from tests.integration.workload import wait_projections_caught_up

DOWN_S = 12


def test_the_write_side_survives_two_broker_kills_under_load(make_settings, start_system, tmp_path: Path) -> None:
    broker = LocalBroker(port=free_ports(2), data_dir=tmp_path / "kafka", heap="512m")
    broker.start()
    try:
        settings = make_settings(shards=2, partitions=4)
        settings = settings.model_copy(update={"kafka": KafkaSettings(bootstrap_servers=broker.status().bootstrap)})
        system = start_system(settings)
        run = uuid.uuid4().hex[:6]
        system.submit_many([AddStock(sku=f"{run}-{s}", quantity=1_000_000) for s in range(5)])
        placed: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def drive() -> None:
            i = 0
            while not stop.is_set():
                batch = [
                    PlaceOrder(
                        order_id=f"{run}-{i + k}", customer_id="c",
                        lines=(OrderLine(sku=f"{run}-{(i + k) % 5}", quantity=1, unit_price_cents=100),),
                    )
                    for k in range(20)
                ]  # fmt: skip
                i += 20
                while True:  # a documented, retriable error: resubmit the same commands
                    try:
                        outcomes = system.submit_many(batch, timeout=30)
                        break
                    except ShardUnavailable:
                        continue
                    except BaseException as exc:
                        errors.append(exc)
                        return
                if not all(o.ok for o in outcomes):
                    errors.append(AssertionError([o for o in outcomes if not o.ok][:2]))
                    return
                placed.extend(c.order_id for c in batch)
                time.sleep(0.05)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        recoveries = []
        try:
            for _ in range(2):
                time.sleep(5)
                sigkill(broker)
                time.sleep(DOWN_S)
                broker.start()
                back = time.monotonic()
                count = len(placed)
                while len(placed) <= count:
                    assert not errors, errors
                    assert time.monotonic() - back < 30, (
                        "the write side did not serve within 30 s of the broker's return"
                    )
                    time.sleep(0.2)
                recoveries.append(time.monotonic() - back)
            time.sleep(3)
        finally:
            stop.set()
            driver.join(timeout=120)
        assert not errors, errors
        print(f"\nserving again {', '.join(f'{r:.1f}s' for r in recoveries)} after the broker returned")

        # Settled: every saga ended and its compensations and shipments reached the other services.
        deadline = time.monotonic() + 240
        while True:
            states = {k: s for shard in system.shards["order"] for k, (s, _) in ray.get(shard.dump.remote()).items()}
            ended = all(oid in states and states[oid].terminal for oid in placed)
            log = [
                e for svc in ("order", "inventory", "payment", "shipping") for e in read_log(settings, f"{svc}-events")
            ]
            result = audit(log, order_ids=placed)
            if (ended and result.ok) or time.monotonic() > deadline:
                break
            time.sleep(2)
        in_log = {e.aggregate_id for e in log if e.envelope.event_type == "OrderPlaced"}
        missing = [oid for oid in placed if oid not in states]
        assert not missing, (
            f"{len(missing)} accepted orders are in no order shard, e.g. {missing[:3]}; "
            f"{len([m for m in missing if m in in_log])} of them are in the log"
        )
        assert result.ok, result.violations
        assert result.orders == len(placed)
        assert sum(result.outcomes.values()) == len(placed), "every saga ends"
        wait_projections_caught_up(system, log)
        assert system.query("SELECT count(), uniqExact(event_id) FROM events_raw").rows[0] == (len(log), len(log))
    finally:
        broker.stop()

"""Broker loss under load on a local 3-broker cluster (RF 3, min.insync.replicas 2, uncapped):

1. SIGKILL the broker that leads the transaction coordinator of an order shard's partition while
   orders flow through the whole choreography, and bring it back later: the load goes on, and the
   test reports the throughput dip and how long it lasted.
2. SIGKILL two brokers for a few seconds: writes stop (fewer in-sync replicas than min ISR), a
   caller gets the documented, retriable ShardUnavailable saying so, and writes resume once a
   broker returns.

Then every invariant holds, from the log and in ClickHouse (every event exactly once), and no
caller saw an error other than the retried ShardUnavailable."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from choreography.broker import LocalCluster
from choreography.config import Settings, settings_from_metadata
from choreography.errors import ShardUnavailable
from choreography.system import System
from shop.invariants import audit
from shop.messages import AddStock, OrderLine, PlaceOrder
from tests.e2e.faults import free_ports, sigkill
from tests.integration.conftest import isolated_metadata, read_log
from tests.integration.workload import wait_projections_caught_up

pytestmark = pytest.mark.slow

SKUS = [f"SKU-{i:02d}" for i in range(8)]
SERVICES = ("order", "inventory", "payment", "shipping")
ONE_DOWN_S = 25  # failover takes 10-16 s here (more on a slow host, which the test waits for)
TXN_STATE_PARTITIONS = 10  # transaction.state.log.num.partitions of the local brokers


def coordinator_of(bootstrap: str, transactional_id: str) -> int:
    """The node that leads the transaction-state partition of `transactional_id`: Kafka picks it
    as abs(String.hashCode) modulo the partition count."""
    h = 0
    for unit in transactional_id.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    partition = (0 if signed == -(1 << 31) else abs(signed)) % TXN_STATE_PARTITIONS
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics("__transaction_state", timeout=10).topics
    return int(topics["__transaction_state"].partitions[partition].leader)


class Load:
    """Places orders, 20 per call, in a thread. Records when each call completed; retries the
    documented ShardUnavailable (recording its messages) and stops on any other error."""

    def __init__(self, system: System, run: str) -> None:
        self.system, self.run = system, run
        self.orders: list[str] = []
        self.completed: list[float] = []
        self.unavailable: list[tuple[float, str]] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        while not self.stop.is_set():
            n = len(self.orders)
            batch = [
                PlaceOrder(order_id=f"{self.run}-{i}", customer_id=f"c{i % 40}",
                           lines=(OrderLine(sku=SKUS[i % len(SKUS)], quantity=1, unit_price_cents=500),))
                for i in range(n, n + 20)
            ]  # fmt: skip
            while True:
                try:
                    outcomes = self.system.submit_many(batch, timeout=20)
                    break
                except ShardUnavailable as exc:  # documented and retriable: resubmit the same commands
                    self.unavailable.append((time.monotonic(), str(exc)))
                except BaseException as exc:
                    self.errors.append(exc)
                    return
            if not all(o.ok for o in outcomes):
                self.errors.append(AssertionError([o for o in outcomes if not o.ok][:2]))
                return
            self.orders.extend(c.order_id for c in batch)
            self.completed.append(time.monotonic())
            time.sleep(0.02)

    def rate(self, since: float, until: float) -> float:
        """Orders placed per second over [since, until)."""
        return 20 * sum(since <= t < until for t in self.completed) / max(until - since, 1e-9)

    def wait_more(self, calls: int, timeout: float, why: str) -> float:
        """Wait until `calls` more calls complete; returns how long that took."""
        start, target = time.monotonic(), len(self.completed) + calls
        while len(self.completed) < target:
            assert not self.errors, self.errors
            assert time.monotonic() - start < timeout, why
            time.sleep(0.05)
        return time.monotonic() - start


def dip(load: Load, killed: float, returned: float, baseline: float) -> dict[str, float]:
    """The throughput dip of a broker kill: the worst 1-s rate after the kill, the longest time no
    call completed, and when a 3-s window first ran at 80% of the baseline again."""
    seconds = [load.rate(killed + s, killed + s + 1) for s in range(int(returned - killed))]
    done = [t for t in load.completed if t >= killed]
    gaps = [b - a for a, b in zip([killed, *done], done, strict=False)]
    recovered = next(
        (
            s
            for s in range(int(time.monotonic() - killed) - 3)
            if load.rate(killed + s, killed + s + 3) >= 0.8 * baseline
        ),
        None,
    )
    return {
        "baseline_orders_per_s": round(baseline, 1),
        "one_down_orders_per_s": round(load.rate(killed, returned), 1),
        "worst_second_orders_per_s": round(min(seconds, default=0.0), 1),
        "longest_stall_s": round(max(gaps, default=0.0), 2),
        "back_to_80pct_after_s": -1.0 if recovered is None else float(recovered),
    }


def settings_on(bootstrap: str, workdir: Path) -> Settings:
    meta = isolated_metadata(workdir, bootstrap, partitions=4, letter="b")
    meta["services"]["order"].update(shards=2)
    return settings_from_metadata(meta, env={})


def test_three_brokers_ride_out_the_loss_of_one_and_stop_writes_without_two(tmp_path: Path, start_system) -> None:
    cluster = LocalCluster(brokers=3, port=free_ports(6), data_dir=tmp_path / "kafka", heap="384m")
    cluster.start()
    try:
        bootstrap = cluster.status().bootstrap
        settings = settings_on(bootstrap, tmp_path)
        system = start_system(settings)
        assert all(o.ok for o in system.submit_many([AddStock(sku=s, quantity=1_000_000) for s in SKUS]))
        load = Load(system, uuid.uuid4().hex[:6])
        load.wait_more(5, 120, "the load never got going")
        steady_from = time.monotonic()
        time.sleep(8)

        # 1. one broker: the coordinator of the transactions of order partition 0
        victim = coordinator_of(bootstrap, f"{settings.topic_prefix}choreo-order-p0")
        killed = time.monotonic()
        baseline = load.rate(steady_from, killed)
        sigkill(cluster.node(victim))
        time.sleep(ONE_DOWN_S)
        # Orders flow again with the broker still down: three more calls complete. Usually they
        # have been flowing for a while; a slow host has taken over 30 s to fail over.
        load.wait_more(3, 120, "orders do not flow while one broker is down")
        returned = time.monotonic()
        cluster.start(only=victim)
        deadline = time.monotonic() + 120
        while cluster.status().under_replicated:
            assert time.monotonic() < deadline, "the returned broker never caught up"
            time.sleep(1)
        time.sleep(5)
        one_down = dip(load, killed, returned, baseline)
        print(f"\nbroker {victim} (a transaction coordinator) killed for {ONE_DOWN_S} s:", json.dumps(one_down))

        # 2. two brokers: no in-sync quorum for min.insync.replicas 2, nor a controller quorum
        first, second = [n for n in (1, 2, 3) if n != victim][:2]
        two_down = time.monotonic()
        sigkill(cluster.node(first))
        sigkill(cluster.node(second))
        time.sleep(2)  # a call committed just before the kill may still be on its way back
        stopped_from = time.monotonic()
        probe = PlaceOrder(order_id=f"{load.run}-probe", customer_id="c",
                           lines=(OrderLine(sku=SKUS[0], quantity=1, unit_price_cents=500),))  # fmt: skip
        with pytest.raises(ShardUnavailable) as refused:
            system.submit_many([probe], timeout=20)
        time.sleep(max(0.0, stopped_from + 8 - time.monotonic()))
        assert load.rate(stopped_from, time.monotonic()) == 0, "no write completes with two of three brokers down"
        message = str(refused.value)
        print(f"with two brokers down, a caller sees: {message}")
        assert "1 of 3 Kafka brokers reachable" in message and "min.insync.replicas" in message, message
        assert "resubmit" in message, message
        back = time.monotonic()
        cluster.start(only=first)
        resumed = load.wait_more(1, 180, "writes did not resume once a second broker returned")
        cluster.start(only=second)
        print(f"two brokers down {back - two_down:.1f}s; writes resumed {resumed:.1f}s after one returned")
        load.wait_more(3, 120, "the load did not go on after both brokers returned")
        (resubmitted,) = system.submit_many([probe], timeout=60)  # safe: deduplicated by command id
        assert resubmitted.ok, resubmitted
        load.orders.append(probe.order_id)
        load.stop.set()
        load.thread.join(timeout=120)
        assert not load.errors, load.errors

        # Settled: every saga ended, every invariant holds, the read side holds each event once.
        deadline = time.monotonic() + 240
        while True:
            log = [e for svc in SERVICES for e in read_log(settings, f"{svc}-events")]
            result = audit(log, order_ids=load.orders)
            if (result.ok and sum(result.outcomes.values()) == len(load.orders)) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert result.ok, result.violations[:5]
        assert result.orders == len(load.orders)
        assert sum(result.outcomes.values()) == len(load.orders), "every saga ends"
        wait_projections_caught_up(system, log)
        assert system.query("SELECT count(), uniqExact(event_id) FROM events_raw").rows[0] == (len(log), len(log))
        ended = "SELECT count() FROM orders FINAL WHERE status IN ('confirmed', 'cancelled', 'rejected')"
        assert system.query(ended).scalar() == len(load.orders), "ClickHouse sees every saga end once"
    finally:
        cluster.stop()

"""`choreo loadtest`: drive the whole choreography at a fixed rate (open loop) or with a fixed
number of sagas in flight (closed loop), measure latencies and stage throughput, audit invariants."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from choreography.errors import ShardUnavailable
from choreography.eventlog import read_topic
from choreography.invariants import audit
from choreography.kafka_io import consumer_config
from choreography.lag import consumer_lag
from choreography.system import System
from choreography.topics import events_topic
from events import AddStock, CancelOrder, OrderLine, PlaceOrder
from events.base import Command
from events.registry import TYPE_HEADER

TERMINAL = {"OrderConfirmed": "confirmed", "OrderRejected": "rejected", "OrderCancelled": "cancelled"}
SERVICES = ("order", "inventory", "payment", "shipping")


@dataclass
class LoadSpec:
    mode: str = "open"
    """open: a fixed --rate for --duration; closed: keep --concurrency sagas in flight."""
    rate: float = 500.0
    duration: float = 30.0
    orders: int | None = None
    """Stop after this many orders (either mode)."""
    concurrency: int = 2000
    lines: int = 2
    stockouts: float = 0.10
    declines: float = 0.10
    ship_failures: float = 0.05
    cancels: float = 0.05
    seed: int = 1
    drain_timeout: float = 120.0
    skus: int = 200


class OrderFactory:
    """Orders of one run: their own SKUs (plenty of stock, plus one scarce SKU) and the mix."""

    def __init__(self, run: str, spec: LoadSpec) -> None:
        self.run, self.spec = run, spec
        self.rng = random.Random(spec.seed)
        self.skus = [f"{run}-sku-{i}" for i in range(spec.skus)]
        self.scarce = f"{run}-sku-scarce"
        self.count = 0

    def stock(self) -> list[Command]:
        adds: list[Command] = [AddStock(sku=s, quantity=10_000_000) for s in self.skus]
        return [*adds, AddStock(sku=self.scarce, quantity=1)]

    def next(self) -> tuple[PlaceOrder, bool]:
        rng, spec = self.rng, self.spec
        skus = rng.sample(self.skus, spec.lines)
        if rng.random() < spec.stockouts:
            skus[0] = self.scarce
        roll = rng.random()
        order = PlaceOrder(
            order_id=f"{self.run}-{self.count}",
            customer_id=f"{self.run}-c{rng.randrange(10_000)}",
            lines=tuple(
                OrderLine(sku=s, quantity=rng.randint(1, 3), unit_price_cents=rng.randint(100, 9000)) for s in skus
            ),
            payment_token="tok_chargeDeclined" if roll < spec.declines else "tok_visa",
            shipping_address="Nowhere 0" if spec.declines <= roll < spec.declines + spec.ship_failures else "1 Main St",
        )
        self.count += 1
        return order, rng.random() < spec.cancels


class SagaObserver(threading.Thread):
    """Follows order-events from now on; records when each of the run's orders ends and counts
    every stage per second."""

    def __init__(self, system: System, run: str) -> None:
        super().__init__(name="observer", daemon=True)
        settings = system.settings
        self.topic = settings.topic_name(events_topic("order"))
        self.prefix = f"{run}-".encode()
        self.consumer = Consumer(
            consumer_config(settings.kafka.client_config(), f"{settings.namespace}-loadtest-{run}")
        )
        parts = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        ends = {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in parts}
        self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in ends.items()])
        self.ended: dict[str, tuple[str, float, tuple[str, int, int]]] = {}
        self.stages: dict[int, Counter[str]] = defaultdict(Counter)
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for msg in self.consumer.consume(5000, timeout=0.1):
                if msg.error() is not None or not (msg.key() or b"").startswith(self.prefix):
                    continue
                now = time.time()
                raw_kind = dict(msg.headers() or []).get(TYPE_HEADER) or b""
                kind = raw_kind.decode() if isinstance(raw_kind, bytes) else raw_kind
                with self.lock:
                    self.stages[int(now)][kind] += 1
                    if kind in TERMINAL:
                        order_id = (msg.key() or b"").decode()
                        self.ended[order_id] = (
                            TERMINAL[kind],
                            now,
                            (self.topic, msg.partition() or 0, msg.offset() or 0),
                        )
        self.consumer.close()


@dataclass
class Sample:
    t: float
    offered: int
    completed: int
    lag: dict[str, int] = field(default_factory=dict)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
        "count": len(ordered),
    }


class LoadTest:
    def __init__(self, system: System, spec: LoadSpec, visible_projection: str = "saga_outcomes") -> None:
        self.system, self.spec = system, spec
        self.run = f"lt{int(time.time())}{random.Random().randrange(1000):03d}"
        self.factory = OrderFactory(self.run, spec)
        self.placed_at: dict[str, float] = {}
        self.visible_at: dict[str, float] = {}
        self.errors: Counter[str] = Counter()
        self.samples: list[Sample] = []
        self.visible_projection = visible_projection if visible_projection in system.projection_hosts else None

    # ---- driving ---------------------------------------------------------------------

    def _submit(self, commands: list[Command]) -> None:
        try:
            outcomes = self.system.submit_many(commands, timeout=120)
        except ShardUnavailable:
            self.errors["shard_unavailable"] += len(commands)
            return
        for outcome in outcomes:
            if not outcome.ok:
                self.errors[f"rejected:{outcome.code}"] += 1  # type: ignore[union-attr]

    def _offer(self, n: int) -> None:
        places: list[Command] = []
        cancels: list[Command] = []
        now = time.time()
        for _ in range(n):
            order, cancel = self.factory.next()
            places.append(order)
            self.placed_at[order.order_id] = now
            if cancel:
                cancels.append(CancelOrder(order_id=order.order_id))
        self._submit(places)
        if cancels:
            self._submit(cancels)

    def run_load(self, observer: SagaObserver, on_tick: Any = None) -> float:
        spec = self.spec
        started = time.monotonic()
        limit = spec.orders if spec.orders is not None else 1 << 62
        next_sample = started
        while True:
            elapsed = time.monotonic() - started
            sent = len(self.placed_at)
            if sent >= limit or (spec.orders is None and elapsed >= spec.duration):
                break
            if spec.mode == "open":
                due = min(int(spec.rate * elapsed) - sent, 1000, limit - sent)
            else:
                due = min(spec.concurrency - (sent - len(observer.ended)), 1000, limit - sent)
            if due > 0:
                self._offer(due)
            else:
                time.sleep(0.005)
            if time.monotonic() >= next_sample:
                next_sample += 1.0
                self._sample(observer, started)
                if on_tick:
                    on_tick(self, observer, started)
        return time.monotonic() - started

    def drain(self, observer: SagaObserver, started: float, on_tick: Any = None) -> None:
        deadline = time.monotonic() + self.spec.drain_timeout
        while time.monotonic() < deadline:
            if len(observer.ended) >= len(self.placed_at) and (
                self.visible_projection is None or len(self.visible_at) >= len(self.placed_at)
            ):
                break
            time.sleep(0.25)
            self._sample(observer, started)
            if on_tick:
                on_tick(self, observer, started)

    def _sample(self, observer: SagaObserver, started: float) -> None:
        self._track_visibility(observer)
        lag: dict[str, int] = defaultdict(int)
        if len(self.samples) % 3 == 0:
            try:
                for row in consumer_lag(self.system.settings):
                    lag[row.kind] += row.lag
            except Exception:  # lag is informative; never fail the run for it
                self.errors["lag_sample_failed"] += 1
        elif self.samples:
            lag = dict(self.samples[-1].lag)
        self.samples.append(Sample(time.monotonic() - started, len(self.placed_at), len(observer.ended), dict(lag)))

    def _track_visibility(self, observer: SagaObserver) -> None:
        if self.visible_projection is None:
            return
        import ray

        host = self.system.projection_hosts[self.visible_projection]
        positions = ray.get(host.positions.remote(self.visible_projection))
        now = time.time()
        with observer.lock:
            pending = [(oid, pos) for oid, (_, _, pos) in observer.ended.items() if oid not in self.visible_at]
        for oid, (topic, partition, offset) in pending:
            if positions.get((topic, partition), 0) > offset:
                self.visible_at[oid] = now

    # ---- report ----------------------------------------------------------------------

    def report(self, observer: SagaObserver, load_seconds: float) -> dict[str, Any]:
        ended = dict(observer.ended)
        to_terminal = [(ended[o][1] - t) * 1000 for o, t in self.placed_at.items() if o in ended]
        to_visible = [(self.visible_at[o] - t) * 1000 for o, t in self.placed_at.items() if o in self.visible_at]
        completion_span = (max(v[1] for v in ended.values()) - min(self.placed_at.values())) if ended else 0
        outcomes = Counter(v[0] for v in ended.values())
        stage_totals: Counter[str] = Counter()
        for counts in observer.stages.values():
            stage_totals.update(counts)
        stuck = len(self.placed_at) - len(ended)
        invariants = self.check_invariants()
        return {
            "run": self.run,
            "spec": asdict(self.spec),
            "orders": len(self.placed_at),
            "completed": len(ended),
            "stuck": stuck,
            "load_seconds": load_seconds,
            "offered_orders_per_s": len(self.placed_at) / load_seconds if load_seconds else 0,
            "orders_per_s": len(ended) / completion_span if completion_span else 0,
            "latency_ms": {
                "place_to_terminal": percentiles(to_terminal),
                "place_to_visible": percentiles(to_visible),
            },
            "outcomes": dict(outcomes),
            "stages_per_s": {k: v / completion_span for k, v in stage_totals.items()} if completion_span else {},
            "errors": dict(self.errors),
            "invariants": invariants,
            "timeline": [asdict(s) for s in self.samples],
            "baselines": {},
        }

    def check_invariants(self) -> dict[str, Any]:
        settings = self.system.settings
        kafka = settings.kafka.client_config()
        prefix = f"{self.run}-".encode()
        events = [
            e for svc in SERVICES
            for e in read_topic(kafka, settings.topic_name(events_topic(svc)), key_prefix=prefix, skip_undecodable=True)
        ]  # fmt: skip
        result = audit(events, order_ids=list(self.placed_at), skus=[*self.factory.skus, self.factory.scarce])
        dead = len(self.system.dead_letters())
        ok = result.ok and dead == 0
        return {"ok": ok, "violations": result.violations, "dead_letters": dead, "events_audited": len(events),
                "captured_cents": result.captured_cents, "refunded_cents": result.refunded_cents,
                "confirmed_cents": result.confirmed_cents}  # fmt: skip


def write_outputs(report: dict[str, Any], output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    path = output / "loadtest.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return [path, *plot(report, output)]


def plot(report: dict[str, Any], output: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    t = [s["t"] for s in timeline]
    paths = []

    def rate(key: str) -> list[float]:
        out = [0.0]
        for a, b in itertools.pairwise(timeline):
            dt = b["t"] - a["t"]
            out.append((b[key] - a[key]) / dt if dt > 0 else 0.0)
        return out

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, rate("offered"), label="offered orders/s")
    ax.plot(t, rate("completed"), label="completed orders/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("orders/s")
    ax.legend()
    ax.set_title("Throughput")
    paths.append(_save(plt, fig, output / "throughput.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    lat = report["latency_ms"]["place_to_terminal"]
    ax.bar(["p50", "p95", "p99", "max"], [lat["p50"], lat["p95"], lat["p99"], lat["max"]])
    ax.set_ylabel("ms")
    ax.set_title("Latency place -> terminal")
    paths.append(_save(plt, fig, output / "latency.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    kinds = sorted({k for s in timeline for k in s["lag"]})
    for kind in kinds:
        ax.plot(t, [s["lag"].get(kind, 0) for s in timeline], label=f"{kind} lag")
    ax.set_xlabel("seconds")
    ax.set_ylabel("events behind")
    ax.legend()
    ax.set_title("Consumer lag")
    paths.append(_save(plt, fig, output / "lag.png"))
    return paths


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path

"""`choreo loadtest`: drive the whole choreography at a fixed rate (open loop) or with a fixed
number of sagas in flight (closed loop), measure latencies and stage throughput, audit invariants."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from choreography.cpu import Sample as CpuSample
from choreography.cpu import cost, sample
from choreography.errors import ShardUnavailable
from choreography.graph import choreography_map
from choreography.lag import EdgeLoad, LagRow, consumer_lag, edge_load, with_rates
from choreography.system import System
from choreography.workload import Workload
from events.base import Command
from events.log.kafka_io import consume_ready, consumer_config, event_type
from events.log.reader import read_topic
from events.log.topics import events_topic


@dataclass
class LoadSpec:
    mode: str = "open"
    """open: a fixed --rate for --duration; closed: keep --concurrency sagas in flight."""
    rate: float = 500.0
    """Open loop: sagas started per second."""
    duration: float = 30.0
    sagas: int | None = None
    """Stop after starting this many sagas (either mode)."""
    concurrency: int = 2000
    seed: int = 1
    drain_timeout: float = 120.0


class SagaObserver(threading.Thread):
    """Follows the workload's saga topic from now on; records when each of the run's sagas ends
    (its terminal event) and counts every event type per second."""

    def __init__(self, system: System, run: str, workload: Workload) -> None:
        super().__init__(name="observer", daemon=True)
        settings = system.settings
        self.outcomes = dict(workload.outcomes)
        self.topic = settings.topic_name(workload.saga_topic)
        self.prefix = f"{run}-".encode()
        self.consumer = Consumer(
            consumer_config(settings.kafka.client_config(), f"{settings.namespace}-loadtest-{run}")
        )
        parts = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        ends = {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in parts}
        self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in ends.items()])
        self.ended: dict[str, tuple[str, float, tuple[str, int, int]]] = {}
        self.ended_log: list[tuple[str, tuple[str, int, int]]] = []
        """Sagas in the order they ended, with where their terminal event is (for visibility)."""
        self.stages: dict[int, Counter[str]] = defaultdict(Counter)
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for msg in consume_ready(self.consumer, 5000, 0.1):  # 'now' below is when a saga ended
                if msg.error() is not None or not (msg.key() or b"").startswith(self.prefix):
                    continue
                now = time.time()
                kind = event_type(msg) or ""
                with self.lock:
                    self.stages[int(now)][kind] += 1
                    if kind in self.outcomes:
                        saga_id = (msg.key() or b"").decode()
                        where = (self.topic, msg.partition() or 0, msg.offset() or 0)
                        self.ended[saga_id] = (self.outcomes[kind], now, where)
                        self.ended_log.append((saga_id, where))
        self.consumer.close()


VISIBILITY_POLL_S = 0.1
"""How often the loadtest asks the projection how far it has read. A saga is stamped visible at the
first answer that covers its terminal event, so the figure is late by at most this much."""


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


def new_run_id() -> str:
    """A run id that prefixes every aggregate id of the run."""
    return f"lt{int(time.time())}{random.Random().randrange(1000):03d}"


class LoadTest:
    def __init__(self, system: System, spec: LoadSpec, workload: Workload, run: str) -> None:
        self.system, self.spec, self.workload, self.run = system, spec, workload, run
        self.started_at: dict[str, float] = {}
        self.visible_at: dict[str, float] = {}
        self.errors: Counter[str] = Counter()
        self.samples: list[Sample] = []
        self.lag_rows: deque[tuple[float, list[LagRow]]] = deque(maxlen=2)
        """The last two raw lag samples (time, rows) taken under load: the map's edge figures."""
        self.cpu_before: CpuSample | None = None
        self.cpu_started = time.monotonic()
        visible = workload.visible_projection
        self.visible_projection = visible if visible in system.projection_hosts else None
        self.invisible: dict[str, tuple[str, int, int]] = {}
        """Ended sagas not yet visible, with where their terminal event is."""
        self.ended_seen = 0
        self.visibility_done = threading.Event()

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
        """Start n sagas: every saga's first command in one batch, then every second one..."""
        waves: list[list[Command]] = []
        now = time.time()
        for _ in range(n):
            saga = self.workload.next_saga()
            self.started_at[saga.saga_id] = now
            for i, command in enumerate(saga.commands):
                if i == len(waves):
                    waves.append([])
                waves[i].append(command)
        for wave in waves:
            self._submit(wave)

    def _cpu_sample(self) -> CpuSample | None:
        try:
            return sample(self.system)
        except Exception:  # the cost model is informative; never fail the run for it
            self.errors["cpu_sample_failed"] += 1
            return None

    def run_load(self, observer: SagaObserver, on_tick: Any = None) -> float:
        spec = self.spec
        self.cpu_before = self._cpu_sample()
        started = time.monotonic()
        self.cpu_started = started
        limit = spec.sagas if spec.sagas is not None else 1 << 62
        next_sample = started
        threading.Thread(target=self._follow_visibility, args=(observer,), name="visibility", daemon=True).start()
        while True:
            elapsed = time.monotonic() - started
            sent = len(self.started_at)
            if sent >= limit or (spec.sagas is None and elapsed >= spec.duration):
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
                self._sample(observer, started, under_load=True)
                if on_tick:
                    on_tick(self, observer, started)
        return time.monotonic() - started

    def drain(self, observer: SagaObserver, started: float, on_tick: Any = None) -> None:
        deadline = time.monotonic() + self.spec.drain_timeout
        while time.monotonic() < deadline:
            if len(observer.ended) >= len(self.started_at) and (
                self.visible_projection is None or len(self.visible_at) >= len(self.started_at)
            ):
                break
            time.sleep(0.25)
            self._sample(observer, started)
            if on_tick:
                on_tick(self, observer, started)
        self.visibility_done.set()

    def _sample(self, observer: SagaObserver, started: float, under_load: bool = False) -> None:
        lag: dict[str, int] = defaultdict(int)
        if len(self.samples) % 3 == 0:
            try:
                rows = consumer_lag(self.system.settings)
                if under_load:
                    self.lag_rows.append((time.monotonic(), rows))
                for row in rows:
                    lag[row.kind] += row.lag
            except Exception:  # lag is informative; never fail the run for it
                self.errors["lag_sample_failed"] += 1
        elif self.samples:
            lag = dict(self.samples[-1].lag)
        self.samples.append(Sample(time.monotonic() - started, len(self.started_at), len(observer.ended), dict(lag)))

    def _follow_visibility(self, observer: SagaObserver) -> None:
        """Until the drain ends: every VISIBILITY_POLL_S, stamp the sagas the projection has read."""
        while not self.visibility_done.wait(VISIBILITY_POLL_S):
            try:
                self._track_visibility(observer)
            except Exception:  # a figure, not a check: never stop the run for it
                self.errors["visibility_sample_failed"] += 1

    def _track_visibility(self, observer: SagaObserver) -> None:
        if self.visible_projection is None:
            return
        import ray

        host = self.system.projection_hosts[self.visible_projection]
        positions = ray.get(host.positions.remote(self.visible_projection))
        now = time.time()
        with observer.lock:
            ended = observer.ended_log[self.ended_seen :]
        self.ended_seen += len(ended)
        self.invisible.update(ended)
        for saga_id, (topic, partition, offset) in list(self.invisible.items()):
            if positions.get((topic, partition), 0) > offset:
                self.visible_at[saga_id] = now
                del self.invisible[saga_id]

    # ---- report ----------------------------------------------------------------------

    def report(self, observer: SagaObserver, load_seconds: float) -> dict[str, Any]:
        cpu_after = self._cpu_sample()
        cpu_seconds = time.monotonic() - self.cpu_started
        ended = dict(observer.ended)
        to_terminal = [(ended[o][1] - t) * 1000 for o, t in self.started_at.items() if o in ended]
        to_visible = [(self.visible_at[o] - t) * 1000 for o, t in self.started_at.items() if o in self.visible_at]
        completion_span = (max(v[1] for v in ended.values()) - min(self.started_at.values())) if ended else 0
        outcomes = Counter(v[0] for v in ended.values())
        stage_totals: Counter[str] = Counter()
        for counts in observer.stages.values():
            stage_totals.update(counts)
        stuck = len(self.started_at) - len(ended)
        invariants = self.check_invariants()
        return {
            "run": self.run,
            "spec": asdict(self.spec),
            "sagas": len(self.started_at),
            "completed": len(ended),
            "stuck": stuck,
            "load_seconds": load_seconds,
            "offered_sagas_per_s": len(self.started_at) / load_seconds if load_seconds else 0,
            "sagas_per_s": len(ended) / completion_span if completion_span else 0,
            "latency_ms": {
                "start_to_terminal": percentiles(to_terminal),
                "start_to_visible": percentiles(to_visible),
            },
            "outcomes": dict(outcomes),
            "stages_per_s": {k: v / completion_span for k, v in stage_totals.items()} if completion_span else {},
            "errors": dict(self.errors),
            "invariants": invariants,
            "cpu": cost(self.cpu_before, cpu_after, len(ended), cpu_seconds)
            if self.cpu_before is not None and cpu_after is not None
            else [],
            "timeline": [asdict(s) for s in self.samples],
            "map": self.live_map(),
            "baselines": {},
        }

    def live_map(self) -> str:
        """The choreography map (Mermaid) with each edge's events/s and lag near the end of the load."""
        settings = self.system.settings
        load: EdgeLoad = {}
        if len(self.lag_rows) == 2:
            (t0, before), (t1, after) = self.lag_rows
            load = edge_load(settings, with_rates(after, before, t1 - t0))
        return choreography_map(settings).mermaid(load)

    def check_invariants(self) -> dict[str, Any]:
        """The workload's audit of every event of the run (keys `<run>-...`) in every service's log."""
        settings = self.system.settings
        kafka = settings.kafka.client_config()
        prefix = f"{self.run}-".encode()
        events = [
            e for svc in settings.services
            for e in read_topic(kafka, settings.topic_name(events_topic(svc)), self.system.registry,
                                key_prefix=prefix, skip_undecodable=True)
        ]  # fmt: skip
        result = self.workload.audit(events, list(self.started_at))
        dead = len(self.system.dead_letters())
        return {"ok": result.ok and dead == 0, "violations": result.violations, "dead_letters": dead,
                "events_audited": len(events), **result.figures}  # fmt: skip


def write_outputs(report: dict[str, Any], output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    path = output / "loadtest.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    written = [path, *plot(report, output)]
    if report.get("map"):
        the_map = output / "map.md"
        the_map.write_text(
            f"# Choreography map of load test {report['run']}\n\nEach policy and projection edge shows its consumer "
            f"group's events/s and lag on that topic near the end of the load.\n\n```mermaid\n{report['map']}```\n"
        )
        written.append(the_map)
    return written


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
    ax.plot(t, rate("offered"), label="offered sagas/s")
    ax.plot(t, rate("completed"), label="completed sagas/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("sagas/s")
    ax.legend()
    ax.set_title("Throughput")
    paths.append(_save(plt, fig, output / "throughput.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    lat = report["latency_ms"]["start_to_terminal"]
    ax.bar(["p50", "p95", "p99", "max"], [lat["p50"], lat["p95"], lat["p99"], lat["max"]])
    ax.set_ylabel("ms")
    ax.set_title("Latency start -> terminal")
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

    if report["cpu"]:
        roles = [r for r in report["cpu"] if r["role"] != "total"]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh([r["role"] for r in roles], [r["cpu_ms_per_order"] for r in roles])
        ax.invert_yaxis()
        ax.set_xlabel("CPU ms per order")
        ax.set_title(f"CPU cost per role: {report['cpu'][-1]['cpu_ms_per_order']:.2f} ms per order in total")
        paths.append(_save(plt, fig, output / "cpu.png"))
    return paths


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path

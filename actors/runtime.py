"""Process plumbing every Choreo actor shares (shards, policy runners, projection hosts): Ray
options, garbage-collector tuning, starting against a broker that may be down, crash-only restart."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

log = logging.getLogger("choreo.runtime")


def tune_gc() -> None:
    """Make the cyclic garbage collector rare. Hot paths allocate tens of thousands of small,
    acyclic objects per batch (decoded events, rows), which reference counting frees; with the
    default thresholds the collector rescans them over and over and halves throughput."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def actor_options(
    name: str, namespace: str, detached: bool, python_path: Sequence[str] = (), **extra: Any
) -> dict[str, Any]:
    """Ray options shared by Choreo's actors: named (one per role), I/O bound so they reserve no
    CPU, restarted by Ray after a crash, and detached when the deployment should outlive its driver.
    `python_path`: directories of declared code that is not installed, put on the actor's PYTHONPATH."""
    options: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "get_if_exists": True,
        "lifetime": "detached" if detached else None,
        "num_cpus": 0,
        "max_restarts": -1,
        **extra,
    }
    if python_path:
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join([*python_path, *inherited])}}
    return options


def on_head_node() -> Any:
    """A scheduling strategy that keeps an actor on the head node, also across restarts: the
    embedded ClickHouse engine keeps its files on that node's disk (give it a persistent one),
    and restarting it on another node would start from an empty database."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node["Alive"] and "node:__internal_head__" in node["Resources"]:
            return NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
    return "DEFAULT"


T = TypeVar("T")
BROKER_PROBE_S = 5.0
RETRY_MAX_S = 5.0
"""Short: a shard waiting for its broker should notice within seconds that it is back."""


def probe_broker(kafka: dict[str, str]) -> None:
    """Fail fast (KafkaException) when no broker answers, instead of blocking in a long call."""
    from confluent_kafka.admin import AdminClient

    from events.log.kafka_io import admin_config

    AdminClient(admin_config(kafka)).list_topics(timeout=BROKER_PROBE_S)


def start_with_retry(
    build: Callable[[], T],
    kafka: dict[str, str],
    stopping: threading.Event,
    report: Callable[[str], None],
    name: str,
) -> T | None:
    """Build an actor's Kafka-backed core, retrying transient Kafka errors (a broker that is down
    or restarting) with backoff. Ray does not restart an actor whose start raised, so a start must
    never fail for a reason that goes away. Returns None when asked to stop meanwhile."""
    from confluent_kafka import KafkaException

    delay = 1.0
    while not stopping.is_set():
        try:
            probe_broker(kafka)
            return build()
        except KafkaException as exc:
            detail = f"broker unavailable ({exc.args[0] if exc.args else exc}); retrying in {delay:.0f}s"
            report(detail)
            log.warning("%s: %s", name, detail)
            stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)
    return None


def exit_soon(reason: str, delay_s: float = 0.5) -> None:
    """Crash-only restart: exit the process shortly (so a reply in flight still goes out); Ray
    restarts the actor, which fences its predecessor and rehydrates from Kafka."""
    log.error("exiting so Ray restarts this actor: %s", reason)
    threading.Timer(delay_s, os._exit, args=(1,)).start()


class Watchdog:
    """Crash-only bound on blocking client calls whose own timeout does not always hold.

    librdkafka's send_offsets_to_transaction can block past its timeout once the group coordinator
    moved, e.g. after a broker restart (librdkafka issue 5456). The blocked call holds its
    transaction open, and with it every read_committed reader of the transaction's partitions,
    until the broker times the transaction out a minute later. A call still blocked `margin_s` after
    its own timeout calls `on_stuck` (in actors: exit, so Ray restarts the actor, whose new producer
    fences and aborts the transaction at once). Arming is two dict operations; one thread checks."""

    def __init__(self, on_stuck: Callable[[str], None] | None = None, margin_s: float = 5.0, period_s: float = 1.0):
        self.on_stuck = on_stuck
        self.margin_s = margin_s
        self.period_s = period_s
        self.armed: dict[int, tuple[float, str]] = {}
        self.ids = itertools.count()
        if on_stuck is not None:
            threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    @contextmanager
    def bound(self, what: str, timeout_s: float) -> Iterator[None]:
        """Run the block under watch: `what` names the call, `timeout_s` is the timeout it was given."""
        if self.on_stuck is None:
            yield
            return
        key = next(self.ids)
        self.armed[key] = (time.monotonic() + timeout_s + self.margin_s, what)
        try:
            yield
        finally:
            del self.armed[key]

    def _watch(self) -> None:
        assert self.on_stuck is not None
        while True:
            time.sleep(self.period_s)
            now = time.monotonic()
            for deadline, what in list(self.armed.values()):
                if now > deadline:
                    self.on_stuck(f"{what} is still blocked {self.margin_s:g}s past its own timeout")
                    return


def exit_when_stuck() -> Watchdog:
    """The watchdog of an actor process: a stuck call exits it, and Ray restarts it."""
    return Watchdog(partial(exit_soon, delay_s=0.0))


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used: the loadtest's cost model reads it."""
    times = os.times()
    return times.user + times.system


def rss_mb() -> float | None:
    """This process's resident memory in MB (Linux), for status reports; None elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return None

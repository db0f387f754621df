"""Process plumbing every Choreo actor shares (shards, policy runners, projection hosts): Ray
options, garbage-collector tuning, starting against a broker that may be down, crash-only restart."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Sequence
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


T = TypeVar("T")
BROKER_PROBE_S = 5.0
RETRY_MAX_S = 5.0
"""Short: a shard waiting for its broker should notice within seconds that it is back."""


def probe_broker(kafka: dict[str, str]) -> None:
    """Fail fast (KafkaException) when no broker answers, instead of blocking in a long call."""
    from confluent_kafka.admin import AdminClient

    AdminClient({**kafka, "log_level": 0}).list_topics(timeout=BROKER_PROBE_S)


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

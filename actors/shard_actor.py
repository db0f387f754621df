"""The Ray actor that hosts one Shard. Ray restarts it after a crash; a background thread
rehydrates (retrying while the broker is unreachable), then serves."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import ray
from confluent_kafka import KafkaException

from actors.declared import load_aggregate
from actors.outcomes import Outcome, ShardUnavailable
from actors.runtime import (
    actor_options,
    cpu_s,
    exit_soon,
    exit_when_stuck,
    rss_mb,
    start_with_retry,
    tune_gc,
)
from actors.shard import Shard, ShardConfig, ShardFenced
from events.base import Command, DomainModel
from events.declared import load_registry
from events.log.dlq import DeadLetter, LetterMessage

log = logging.getLogger("choreo.shard")

DEADLINE_CHECK_S = 0.25
SERVE_WAIT_S = 30.0
"""How long a call waits for a rehydrating shard before answering ShardUnavailable (retriable)."""


class ShardActor:
    """Serves commands from two doors, one writer behind both: Ray calls (`handle`) and the
    service's command topic (policies), consumed by a background thread."""

    def __init__(self, config: ShardConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        tune_gc()
        self.config = config
        # Declared code is imported here, before any call: a call's commands import their modules as
        # they unpickle, and two threads importing one package at once can deadlock on its module
        # locks (Python then raises _DeadlockError in one of them).
        self.aggregate = self._aggregate()
        self.registry = load_registry({config.service: config.messages})
        self.phase = "starting"
        self.detail = ""
        self._shard: Shard | None = None
        self.serving = threading.Event()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.published: Counter[str] = Counter()
        self.rejections = _rejections_counter()
        self.watchdog = exit_when_stuck()
        self.thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self.thread.start()

    @property
    def shard(self) -> Shard:
        """The serving shard; waits for rehydration, or raises the retriable ShardUnavailable."""
        if not self.serving.wait(SERVE_WAIT_S) or self._shard is None:
            raise ShardUnavailable(f"{self.config.name} is {self.phase}: {self.detail}")
        return self._shard

    def _run(self) -> None:
        try:
            if self._start():
                self._loop()
        except Exception:
            # Crash-only: Ray restarts the actor; it rehydrates and resumes from committed offsets.
            log.exception("%s failed; exiting", self.config.name)
            os._exit(1)

    def _start(self) -> bool:
        """Fence the predecessor and rehydrate, retrying while the broker is unreachable."""
        self.phase = "rehydrating"
        shard = start_with_retry(
            lambda: Shard(self.config, self.aggregate, self.registry, self.watchdog),
            self.config.kafka,
            self.stopping,
            self._report,
            self.config.name,
        )
        if shard is None:
            return False
        self._shard = shard
        self._describe_serving(shard)
        self.serving.set()
        return True

    def _describe_serving(self, shard: Shard) -> None:
        """Phase and detail of a shard that serves: degraded, saying why, when a partition is broken."""
        self.phase = "degraded" if shard.broken else "serving"
        self.detail = "; ".join(f"partition {p}: {why}" for p, why in sorted(shard.broken.items()))

    def _aggregate(self) -> Any:
        c = self.config
        return load_aggregate(c.aggregate, f"metadata.services.{c.service}.aggregate", c.service, c.deadline_s)

    def _report(self, detail: str) -> None:
        self.detail = detail

    def _loop(self) -> None:
        shard = self.shard
        with self.lock:  # a partition adopted meanwhile must be in the assignment, or added to it
            consumer = shard.open_command_stream()
        metadata = consumer.consumer_group_metadata()
        next_check = 0.0
        try:
            while not self.stopping.is_set():
                msgs = consumer.consume(num_messages=self.config.batch_max, timeout=self.config.poll_ms / 1000)
                if msgs:
                    with self.lock:
                        shard.process_messages(msgs, metadata)
                    self._publish_rejections(shard)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + DEADLINE_CHECK_S
                    with self.lock:
                        shard.fire_deadlines()
        except ShardFenced as exc:
            self._restart(exc)

    def _publish_rejections(self, shard: Shard) -> None:
        for code, count in shard.parked_rejections.items():
            if count > self.published[code]:
                self.rejections.inc(count - self.published[code], tags={"service": self.config.service, "code": code})
                self.published[code] = count

    def handle(self, commands: list[Command]) -> list[Outcome]:
        shard = self.shard
        with self.lock:
            try:
                return shard.handle(commands)
            except (ShardFenced, KafkaException) as exc:
                raise self._restart(exc) from None

    def _restart(self, exc: Exception) -> ShardUnavailable:
        """A fatal producer error (fenced, or an epoch lost when the broker restarted mid-transaction)
        is never a permanent state: exit, and Ray restarts this shard, which fences and rehydrates.
        A true zombie is never restarted, because Ray already runs its replacement."""
        self.phase, self.detail = "restarting", str(exc)
        self.serving.clear()
        exit_soon(f"{self.config.name}: {exc}")
        return ShardUnavailable(f"{self.config.name} is restarting after a fatal Kafka error: {exc}")

    def state(self, aggregate_id: str) -> tuple[DomainModel, int]:
        shard = self.shard
        with self.lock:
            return shard.state(aggregate_id)

    def dump(self) -> dict[str, tuple[DomainModel, int]]:
        """Every aggregate this shard holds, with its version (for audits and tests)."""
        shard = self.shard
        with self.lock:
            return {k: (e.state, e.version) for k, e in shard.all_entries().items()}

    def redrive(self, command: Command, letter: DeadLetter, marks: list[tuple[str, bytes, bytes]]) -> Outcome:
        """Decide a parked command afresh through the normal transaction path (see `Shard.redrive`)."""
        shard = self.shard
        with self.lock:
            outcome = shard.redrive(command, LetterMessage(letter), marks)
        self._publish_rejections(shard)
        return outcome

    @ray.method(concurrency_group="moves")
    def release(self, partition: int) -> None:
        """Hand `partition` over to another shard (live rescaling): snapshot it and stop serving it."""
        shard = self.shard
        with self.lock:
            shard.release(partition)

    @ray.method(concurrency_group="moves")
    def acquire(self, partition: int) -> float:
        """Take `partition` over from its previous owner (which `release`d it, or died): rehydrate
        it beside the partitions this shard serves, which go on serving meanwhile, then serve it.
        Returns the seconds it took."""
        started = time.monotonic()
        shard = self.shard
        if partition in shard.owned:
            return 0.0
        try:
            prepared = shard.prepare(partition)
        except KafkaException as exc:
            raise ShardUnavailable(f"{self.config.name} could not take partition {partition} over: {exc}") from None
        with self.lock:
            shard.adopt(prepared)
        self._describe_serving(shard)
        return time.monotonic() - started

    def snapshot_now(self) -> int:
        shard = self.shard
        with self.lock:
            return shard.snapshot_now()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        with self.lock:
            if self._shard is not None:
                self._shard.close()

    def ready(self, timeout: float = 300) -> dict[str, Any]:
        """Wait until the shard serves (or `timeout` passes), then describe it."""
        self.serving.wait(timeout)
        return self.info()

    def info(self) -> dict[str, Any]:
        """Phase (starting, rehydrating, serving, degraded) and figures, answered at once."""
        described: dict[str, Any] = {
            "pid": os.getpid(),
            "name": self.config.name,
            "phase": self.phase,
            "detail": self.detail,
            "rss_mb": rss_mb(),
            "cpu_s": cpu_s(),
        }
        shard = self._shard
        if shard is not None:
            s = shard.stats
            described |= {
                "aggregates": len(shard.entries),  # in memory; the evicted ones are in the store
                "rehydrated_events": s.events,
                "rehydrated_snapshots": s.snapshots,
                "rehydration_s": s.seconds,
                "partitions": sorted(shard.owned),
                "next_offsets": dict(shard.next_offset),
                "broken": dict(shard.broken),
                "rejected": dict(shard.parked_rejections),
                "transactions": shard.transactions,
            }
        return described


def _rejections_counter() -> Any:
    from ray.util.metrics import Counter as RayCounter

    return RayCounter(
        "choreo_parked_rejections",
        description="Commands from a command topic that a shard rejected and dead-lettered",
        tag_keys=("service", "code"),
    )


RemoteShardActor = ray.remote(concurrency_groups={"moves": 1})(ShardActor)  # type: ignore[call-overload]
"""Partition moves run in a concurrency group of their own, so that a partition rehydrating here
does not hold up the commands of the partitions already served."""


def shard_actor_name(service: str, shard: int) -> str:
    """The Ray actor name of a service's shard, in its deployment's namespace."""
    return f"{service}-shard-{shard}"


def actor_name(config: ShardConfig) -> str:
    return shard_actor_name(config.service, config.shard)


def spawn_shard(config: ShardConfig, *, name: str | None = None, detached: bool = False) -> Any:
    """Create (or look up) the named shard actor. I/O bound, so it takes no CPU reservation.
    Shards spread across the cluster's nodes, so that losing one node takes few of them."""
    options = actor_options(
        name or actor_name(config), config.namespace, detached, config.python_path, max_task_retries=-1,
        scheduling_strategy="SPREAD",
    )  # fmt: skip
    return RemoteShardActor.options(**options).remote(config)

"""The Ray actor that owns the ClickHouse engine and runs projection loops in a background thread.

With the embedded chdb:// engine only one engine may exist per process, so exactly one host runs
every projection and all reads go through it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from functools import partial
from typing import Any

import ray
from confluent_kafka import Message, Producer

from choreography.dlq import dead_letter_from, send_dead_letter
from choreography.kafka_io import producer_config
from choreography.runtime import actor_options, tune_gc
from choreography.topics import dlq_topic
from events import default_registry
from events.base import StoredEvent
from events.registry import Registry
from projections import projection_for
from projections.runner import ProjectionRunner
from projections.sink import ClickHouseSink, QueryResult

log = logging.getLogger("choreo.projection.host")


class SharedDecoder:
    """Projections in one host read the same events at about the same time: decode each once."""

    def __init__(self, registry: Registry, capacity: int = 300_000) -> None:
        self.registry = registry
        self.capacity = capacity
        self.cache: OrderedDict[tuple[str, int, int], StoredEvent] = OrderedDict()

    def decode(self, value: bytes | None, topic: str, partition: int, offset: int) -> StoredEvent:
        key = (topic, partition, offset)
        event = self.cache.get(key)
        if event is None:
            event = self.registry.decode_event(value, topic, partition, offset)
            self.cache[key] = event
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return event


class ProjectionHost:
    def __init__(
        self,
        dsn: str,
        kafka: dict[str, str],
        namespace: str,
        topic_prefix: str,
        projections: dict[str, dict[str, Any]],
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        tune_gc()
        self.sink = ClickHouseSink(dsn)
        registry = default_registry()
        shared = SharedDecoder(registry)
        self.dlq = Producer(producer_config(kafka))
        self.dlq_topic = dlq_topic(topic_prefix)
        self.runners: dict[str, ProjectionRunner] = {}
        for name, opts in projections.items():
            runner = ProjectionRunner(
                projection_for(name),
                self.sink,
                kafka,
                registry,
                group_id=f"{namespace}-projection-{name}",
                topics=opts.get("topics"),
                topic_prefix=topic_prefix,
                batch_size=opts.get("batch_size", 50_000),
                flush_interval_ms=opts.get("flush_interval_ms", 200),
                on_poison=partial(self._dead_letter, f"projection {name}"),
                decode=shared.decode,
            )
            runner.start()
            self.runners[name] = runner
        self.paused: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="projections", daemon=True)
        self.thread.start()

    def _dead_letter(self, stage: str, msg: Message, error: str) -> None:
        # Not atomic with the ClickHouse insert: after a crash a poison event may be parked twice.
        send_dead_letter(self.dlq, self.dlq_topic, dead_letter_from(msg, stage, error))
        self.dlq.flush(30)

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                busy = False
                for name, runner in self.runners.items():
                    with self.lock:
                        if name in self.paused:
                            continue
                        busy |= runner.poll_batch().events > 0
                if not busy:
                    time.sleep(0.02)
        except Exception:
            # Crash-only: Ray restarts the actor and every projection resumes from ClickHouse.
            log.exception("projection loop failed; exiting so Ray restarts this actor")
            os._exit(1)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        return self.sink.query(sql, parameters)

    def positions(self, name: str) -> dict[tuple[str, int], int]:
        return self.runners[name].positions()

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "events": r.totals.events,
                "rows": r.totals.rows,
                "poison": r.totals.poison,
                "paused": name in self.paused,
                "positions": r.positions(),
            }
            for name, r in self.runners.items()
        }

    def pause(self, name: str) -> None:
        with self.lock:
            self.paused.add(name)

    def resume(self, name: str) -> None:
        with self.lock:
            self.paused.discard(name)

    def rebuild(self, name: str) -> None:
        with self.lock:
            self.runners[name].rebuild()

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for r in self.runners.values():
            r.stop()
        self.sink.close()


RemoteProjectionHost = ray.remote(ProjectionHost)


def spawn_projection_hosts(
    dsn: str,
    kafka: dict[str, str],
    namespace: str,
    topic_prefix: str,
    projections: dict[str, dict[str, Any]],
    *,
    detached: bool = False,
) -> dict[str, Any]:
    """Projection name -> the actor running it. The embedded engine allows one engine per
    process, so one host runs them all; against a ClickHouse server each gets its own actor."""
    if dsn.startswith("chdb://"):
        host = _spawn("projection-host", dsn, kafka, namespace, topic_prefix, projections, detached)
        return dict.fromkeys(projections, host)
    return {
        name: _spawn(f"projection-{name}", dsn, kafka, namespace, topic_prefix, {name: opts}, detached)
        for name, opts in projections.items()
    }


def _spawn(
    actor: str,
    dsn: str,
    kafka: dict[str, str],
    namespace: str,
    topic_prefix: str,
    projections: dict[str, dict[str, Any]],
    detached: bool,
) -> Any:
    options = actor_options(actor, namespace, detached, max_task_retries=-1, max_concurrency=8)
    return RemoteProjectionHost.options(**options).remote(dsn, kafka, namespace, topic_prefix, projections)

"""The Ray actor that owns the ClickHouse engine and runs projection loops in a background thread.

With the embedded chdb:// engine only one engine may exist per process, so exactly one host runs
every projection and all reads go through it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

import ray
from confluent_kafka import Message, Producer
from ray.util.metrics import Counter

from actors.runtime import actor_options, cpu_s, on_head_node, rss_mb, tune_gc
from events.base import StoredEvent
from events.declared import load_registry
from events.log.dlq import dead_letter_from, send_dead_letter
from events.log.kafka_io import producer_config
from events.log.topics import dlq_topic, projection_group
from events.registry import Registry
from projections.base import Projection
from projections.declared import load_projection
from projections.otel_traces import OTEL_TRACES
from projections.runner import REBUILD, ProjectionRunner, discard_rebuild, promote, recover
from projections.sink import ClickHouseSink, QueryResult

log = logging.getLogger("choreo.projection.host")


class SharedDecoder:
    """Projections in one host read the same events at about the same time: decode each once."""

    def __init__(self, registry: Registry, capacity: int = 300_000) -> None:
        self.registry = registry
        self.capacity = capacity
        self.cache: OrderedDict[tuple[str, int, int], StoredEvent] = OrderedDict()

    def decode(self, value: bytes | None, topic: str, partition: int, offset: int, timestamp_ms: int) -> StoredEvent:
        key = (topic, partition, offset)
        event = self.cache.get(key)
        if event is None:
            event = self.registry.decode_event(value, topic, partition, offset, timestamp_ms)
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
        messages: dict[str, str],
    ) -> None:
        """`projections`: name -> its cluster.yaml options (`projection` import path, topics...);
        `messages`: service -> import path of its events.Messages, to decode every event."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        tune_gc()
        self.sink = ClickHouseSink(dsn)
        self.registry = load_registry(messages)
        self.shared = SharedDecoder(self.registry)
        self.kafka = kafka
        self.namespace = namespace
        self.topic_prefix = topic_prefix
        self.options = projections
        self.dlq = Producer(producer_config(kafka))
        self.dlq_topic = dlq_topic(topic_prefix)
        self.parked_metric = Counter(
            "choreo_projection_parked_events",
            description="Events a projection could not store, parked in the dead-letter topic.",
            tag_keys=("projection",),
        )
        self.runners: dict[str, ProjectionRunner] = {}
        self.rebuilds: dict[str, ProjectionRunner] = {}
        for name in projections:
            unfinished = recover(self.sink, self._projection(name))
            self.runners[name] = self._runner(name)
            self.runners[name].start()
            if unfinished:
                log.warning("projection %s: resuming an unfinished rebuild", name)
                self.rebuilds[name] = self._runner(name, REBUILD)
                self.rebuilds[name].start()
        self.paused: set[str] = set()
        self.spans_ready = False
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="projections", daemon=True)
        self.thread.start()

    def _projection(self, name: str) -> Projection:
        return load_projection(self.options[name]["projection"], f"metadata.projections.{name}.projection", name)

    def _runner(self, name: str, suffix: str = "") -> ProjectionRunner:
        opts = self.options[name]
        stage = f"projection {name}"
        return ProjectionRunner(
            self._projection(name),
            self.sink,
            self.kafka,
            self.registry,
            group_id=projection_group(self.namespace, name) + suffix,
            topics=opts.get("topics"),
            topic_prefix=self.topic_prefix,
            batch_size=opts.get("batch_size", 50_000),
            flush_interval_ms=opts.get("flush_interval_ms", 200),
            # A rebuild meets the same poison the live runner dead-lettered already.
            on_poison=None if suffix else partial(self._dead_letter, stage),
            on_park=partial(self._park, name, stage),
            decode=self.shared.decode,
            suffix=suffix,
        )

    def _dead_letter(self, stage: str, msg: Message, error: str) -> None:
        # Not atomic with the ClickHouse insert: after a crash a poison event may be parked twice.
        send_dead_letter(self.dlq, self.dlq_topic, dead_letter_from(msg, stage, error))
        if self.dlq.flush(30):
            raise RuntimeError(f"dead letter for {stage} not delivered")

    def _park(self, name: str, stage: str, msg: Message, error: str) -> None:
        self._dead_letter(stage, msg, error)
        self.parked_metric.inc(1, tags={"projection": name})

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                busy = False
                for name in list(self.runners):
                    with self.lock:
                        if name in self.paused:
                            continue
                        runner = self.runners[name]
                        busy |= runner.poll_batch().events > 0
                        fresh = self.rebuilds.get(name)
                        if fresh is not None:
                            busy |= fresh.poll_batch().events > 0
                            if fresh.caught_up_with(runner.positions()):
                                self._promote(name)
                if not busy:
                    time.sleep(0.02)
        except Exception:
            # Crash-only: Ray restarts the actor and every projection resumes from ClickHouse.
            log.exception("projection loop failed; exiting so Ray restarts this actor")
            os._exit(1)

    def insert_spans(self, rows: list[dict[str, Any]]) -> int:
        """Live spans from the write path's ClickHouse exporter (actors/live_spans.py), as
        `otel_traces` rows by column name. Returns how many were stored."""
        if not self.spans_ready:
            self.sink.create(OTEL_TRACES)
            self.spans_ready = True
        self.sink.insert(OTEL_TRACES, [tuple(row[c] for c in OTEL_TRACES.columns) for row in rows])
        return len(rows)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        """The public, read-only analytics path (QueryRejected / QueryError on refusal or failure)."""
        return self.sink.read_only_query(sql, parameters)

    def positions(self, name: str) -> dict[tuple[str, int], int]:
        return self.runners[name].positions()

    def _promote(self, name: str) -> None:
        """Swap the caught-up fresh tables in (under the sink's lock: no query sees the renames)."""
        live, fresh = self.runners[name], self.rebuilds.pop(name)
        live.stop()
        fresh.stop()
        with self.sink.lock:
            promote(self.sink, fresh.projection)
            runner = self._runner(name)
            runner.start()
        runner.totals = live.totals
        self.runners[name] = runner
        log.info("projection %s: rebuilt tables are live at %s", name, runner.positions())

    def process(self) -> dict[str, Any]:
        """This host's process: pid, resident memory and CPU seconds (the loadtest's cost model)."""
        return {"pid": os.getpid(), "rss_mb": rss_mb(), "cpu_s": cpu_s()}

    def status(self) -> dict[str, dict[str, Any]]:
        """Per projection: events and rows this run, poison and parked events, whether paused,
        positions, and while a rebuild runs its fresh tables' positions (else None)."""
        with self.lock:
            return {
                name: {
                    "events": r.totals.events,
                    "rows": r.totals.rows,
                    "poison": r.totals.poison,
                    "parked": len(r.parked),
                    "paused": name in self.paused,
                    "positions": r.positions(),
                    "rebuild": self.rebuilds[name].positions() if name in self.rebuilds else None,
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
        """Build fresh tables from the earliest offset while the live ones keep serving; they are
        swapped in once caught up (see projections/runner.py). A rebuild already running goes on."""
        with self.lock:
            if name in self.rebuilds:
                return
            fresh = self._runner(name, REBUILD)
            discard_rebuild(self.sink, fresh.projection)
            fresh.start()
            self.rebuilds[name] = fresh

    def redrive(self, name: str, topic: str, partition: int, offset: int, value: bytes | None) -> dict[str, Any]:
        """Project one parked event again, below the resume point: each table gets its rows only
        if none of its rows holds the event's (topic, partition, offset). Returns the tables
        `inserted` into, those that held it already (`present`), and the `error` if it fails again."""
        projection = self._projection(name)
        inserted: list[str] = []
        present: list[str] = []
        with self.lock:
            runner = self.runners.get(name)
            upto = runner.positions().get((topic, partition)) if runner is not None else None
            if upto is not None and offset >= upto:
                # Not consumed yet: the runner will store it itself; inserting now would duplicate.
                return {"inserted": [], "present": [], "error": None, "pending": f"the projection is at offset {upto}"}
            try:
                event = self.registry.decode_event(value, topic, partition, offset)
                rows_by_table = projection.project([event], self.sink.rows)
                for table in projection.tables:
                    rows = rows_by_table.get(table.name, [])
                    if not rows:
                        continue
                    held = self.sink.rows(
                        f"SELECT count() FROM {table.name} WHERE _topic = %(t)s AND _partition = %(p)s "
                        "AND _offset = %(o)s",
                        {"t": topic, "p": partition, "o": offset},
                    )[0][0]
                    if held:
                        present.append(table.name)
                        continue
                    self.sink.insert(table, rows)
                    inserted.append(table.name)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:4000]
                return {"inserted": inserted, "present": present, "error": error, "pending": None}
        return {"inserted": inserted, "present": present, "error": None, "pending": None}

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for r in [*self.runners.values(), *self.rebuilds.values()]:
            r.stop()
        self.sink.close()


RemoteProjectionHost = ray.remote(ProjectionHost)


def spawn_projection_hosts(
    dsn: str,
    kafka: dict[str, str],
    namespace: str,
    topic_prefix: str,
    projections: dict[str, dict[str, Any]],
    messages: dict[str, str],
    *,
    detached: bool = False,
    python_path: Sequence[str] = (),
) -> dict[str, Any]:
    """Projection name -> the actor running it (see `host_names`)."""
    names = host_names(dsn, list(projections))
    hosts: dict[str, Any] = {}
    for actor in dict.fromkeys(names.values()):
        mine = {name: opts for name, opts in projections.items() if names[name] == actor}
        hosts[actor] = _spawn(actor, dsn, kafka, namespace, topic_prefix, mine, messages, detached, python_path)
    return {name: hosts[names[name]] for name in projections}


def host_names(dsn: str, projections: list[str]) -> dict[str, str]:
    """Projection name -> the Ray actor name of its host. The embedded engine allows one engine
    per process, so one host runs them all; against a ClickHouse server each gets its own actor."""
    if dsn.startswith("chdb://"):
        return dict.fromkeys(projections, "projection-host")
    return {name: f"projection-{name}" for name in projections}


def _spawn(
    actor: str,
    dsn: str,
    kafka: dict[str, str],
    namespace: str,
    topic_prefix: str,
    projections: dict[str, dict[str, Any]],
    messages: dict[str, str],
    detached: bool,
    python_path: Sequence[str],
) -> Any:
    options = actor_options(actor, namespace, detached, python_path, max_task_retries=-1, max_concurrency=8)
    if dsn.startswith("chdb://"):  # one embedded engine, on the head node's disk; a server's clients run anywhere
        options["scheduling_strategy"] = on_head_node()
    return RemoteProjectionHost.options(**options).remote(dsn, kafka, namespace, topic_prefix, projections, messages)

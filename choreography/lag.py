"""Consumer lag of every Choreo consumer group (shards, policies, projections), and a Ray actor
that exports it as Ray metrics (visible on Ray's Prometheus endpoint)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from actors.runtime import actor_options
from choreography.config import Settings
from events.log.kafka_io import admin_config
from events.log.topics import commands_topic, events_topic, policy_group, projection_group, shard_group

log = logging.getLogger("choreo.lag")


@dataclass(frozen=True)
class LagRow:
    group: str
    kind: str
    topic: str
    partition: int
    committed: int
    end: int
    events_per_s: float = 0.0

    @property
    def lag(self) -> int:
        return max(0, self.end - max(self.committed, 0))


def consumer_groups(settings: Settings) -> list[tuple[str, str, list[str]]]:
    """(group id, kind, topics) of every consumer group the topology runs."""
    ns, prefix = settings.namespace, settings.topic_prefix
    groups: list[tuple[str, str, list[str]]] = []
    for service in settings.services:
        groups.append((shard_group(ns, service), "shard", [commands_topic(service, prefix)]))
        if settings.services[service].policies:  # also while scaled to 0 runners: its lag still grows
            sources = settings.sources(service)
            groups.append((policy_group(ns, service), "policy", [events_topic(s, prefix) for s in sources]))
    for name, spec in settings.projections.items():
        groups.append((projection_group(ns, name), "projection", [f"{prefix}{t}" for t in spec.topics]))
    return groups


def consumer_lag(settings: Settings, admin: AdminClient | None = None, timeout: float = 10) -> list[LagRow]:
    admin = admin or AdminClient(admin_config(settings.kafka.client_config(), log_level=3))
    meta = admin.list_topics(timeout=timeout).topics
    groups = consumer_groups(settings)
    partitions = {
        TopicPartition(t, p) for _, _, topics in groups for t in topics if t in meta for p in meta[t].partitions
    }
    ends: dict[tuple[str, int], int] = {}
    if partitions:
        futures = admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in partitions},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=timeout,
        )
        for tp, fut in futures.items():
            ends[(tp.topic, tp.partition)] = fut.result().offset
    rows: list[LagRow] = []
    for group, kind, topics in groups:
        tps = [TopicPartition(t, p) for t in topics if t in meta for p in sorted(meta[t].partitions)]
        if not tps:
            continue
        request = [ConsumerGroupTopicPartitions(group, tps)]
        result = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result()
        for tp in result.topic_partitions:
            rows.append(LagRow(group, kind, tp.topic, tp.partition, tp.offset, ends.get((tp.topic, tp.partition), 0)))
    return rows


def with_rates(now: list[LagRow], before: list[LagRow], seconds: float) -> list[LagRow]:
    """Attach events/s: how fast each group's committed offset moved between two samples."""
    prev = {(r.group, r.topic, r.partition): r.committed for r in before}
    out = []
    for r in now:
        moved = max(0, r.committed - max(prev.get((r.group, r.topic, r.partition), r.committed), 0))
        out.append(LagRow(r.group, r.kind, r.topic, r.partition, r.committed, r.end, moved / seconds if seconds else 0))
    return out


EdgeLoad = dict[tuple[str, str], tuple[float, int]]
"""(consumer, topic without prefix) -> (events/s, lag): a policy stage's consumer is its service,
a projection's its name (the edges of `choreo graph --live`)."""


def edge_load(settings: Settings, rows: list[LagRow]) -> EdgeLoad:
    """Sum each policy and projection group's rate and lag per topic."""
    ns, prefix = settings.namespace, settings.topic_prefix
    consumers = {policy_group(ns, s): s for s in settings.services}
    consumers.update({projection_group(ns, p): p for p in settings.projections})
    load: EdgeLoad = {}
    for r in rows:
        consumer = consumers.get(r.group)
        if consumer is None or r.kind == "shard":
            continue
        key = (consumer, r.topic.removeprefix(prefix))
        rate, lag = load.get(key, (0.0, 0))
        load[key] = (rate + r.events_per_s, lag + r.lag)
    return load


def sample_load(settings: Settings, seconds: float) -> EdgeLoad:
    """Two lag samples `seconds` apart: every edge's events/s and its lag at the second sample."""
    before = consumer_lag(settings)
    started = time.monotonic()
    time.sleep(seconds)
    after = consumer_lag(settings)
    return edge_load(settings, with_rates(after, before, time.monotonic() - started))


class LagMonitor:
    """Samples lag every few seconds and exports it as Ray gauges (choreo_consumer_lag, ...)."""

    def __init__(self, settings: Settings, interval_s: float = 5.0) -> None:
        from ray.util.metrics import Gauge

        self.settings = settings
        self.interval = interval_s
        tags = ("group", "kind", "topic", "partition")
        self.lag = Gauge("choreo_consumer_lag", "Events not yet consumed", tag_keys=tags)
        self.committed = Gauge("choreo_committed_offset", "Committed offset", tag_keys=tags)
        self.rate = Gauge("choreo_events_per_second", "Consumption rate", tag_keys=tags)
        self.rows: list[LagRow] = []
        self.stopping = threading.Event()
        threading.Thread(target=self._loop, name="lag", daemon=True).start()

    def _loop(self) -> None:
        before: list[LagRow] = []
        last = time.monotonic()
        while not self.stopping.wait(self.interval if before else 0.5):
            try:
                now_rows = consumer_lag(self.settings)
            except Exception as exc:  # the broker may be briefly away; keep the last sample
                log.warning("lag sample failed: %s", exc)
                continue
            now = time.monotonic()
            self.rows = with_rates(now_rows, before, now - last) if before else now_rows
            before, last = now_rows, now
            for r in self.rows:
                tags = {"group": r.group, "kind": r.kind, "topic": r.topic, "partition": str(r.partition)}
                self.lag.set(r.lag, tags=tags)
                self.committed.set(max(r.committed, 0), tags=tags)
                self.rate.set(r.events_per_s, tags=tags)

    def sample(self) -> list[LagRow]:
        return self.rows

    def stop(self) -> None:
        self.stopping.set()


RemoteLagMonitor = ray.remote(LagMonitor)


LAG_MONITOR = "lag-monitor"
"""The Ray actor name of the lag monitor, in its deployment's namespace."""


def spawn_lag_monitor(settings: Settings, *, detached: bool = False) -> Any:
    options = actor_options(LAG_MONITOR, settings.namespace, detached, settings.python_path)
    return RemoteLagMonitor.options(**options).remote(settings)

"""Topic creation from the topology cluster.yaml declares."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from choreography.config import ConfigError, Settings, TopicSpec
from events.log.kafka_io import admin_config

log = logging.getLogger("choreo.topics")


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings.kafka.client_config(), log_level=3))


def broker_count(admin: AdminClient, timeout: float = 10.0) -> int:
    return len(admin.list_topics(timeout=timeout).brokers)


def capped(spec: TopicSpec, brokers: int) -> TopicSpec:
    """Cap the replication factor and min.insync.replicas to what the cluster can hold."""
    config = dict(spec.config)
    rf = min(spec.replication_factor, brokers)
    isr = config.get("min.insync.replicas")
    if isr is not None and int(isr) > rf:
        config["min.insync.replicas"] = str(rf)
    if rf != spec.replication_factor or config != spec.config:
        log.warning(
            "topic %s: replication_factor %d -> %d, min.insync.replicas %s -> %s (capped to %d broker%s)",
            spec.name, spec.replication_factor, rf, isr, config.get("min.insync.replicas"), brokers,
            "" if brokers == 1 else "s",
        )  # fmt: skip
    return spec.model_copy(update={"replication_factor": rf, "config": config})


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every declared topic that does not exist yet. Returns the names created. A topic
    that exists with another partition count than declared is a ConfigError: partitions never
    change in place, because aggregate ids map to partitions by count."""
    admin = admin_client(settings)
    brokers = broker_count(admin, timeout)
    metadata = admin.list_topics(timeout=timeout).topics
    existing = set(metadata)
    named = [t.model_copy(update={"name": settings.topic_name(t.name)}) for t in settings.all_topics()]
    mismatched = [
        f"topic {t.name} has {len(metadata[t.name].partitions)} partitions but cluster.yaml declares {t.partitions}"
        for t in named
        if t.name in metadata and len(metadata[t.name].partitions) != t.partitions
    ]
    if mismatched:
        raise ConfigError(
            "; ".join(mismatched) + ". Partition counts never change in place: restore the declared count, "
            "or deploy under a new topic_prefix and migrate the events."
        )
    specs = [capped(t, brokers) for t in named if t.name not in existing]
    if not specs:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in specs],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    _wait_for_leaders(admin, created, timeout)
    return created


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """New topics take a moment to elect partition leaders; callers may use them at once."""
    deadline = time.monotonic() + timeout
    while topics and time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout).topics
        if all(
            name in meta and meta[name].partitions and all(p.leader >= 0 for p in meta[name].partitions.values())
            for name in topics
        ):
            return
        time.sleep(0.1)

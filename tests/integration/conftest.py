"""Integration fixtures: a real Kafka broker (required), a real Ray runtime, embedded ClickHouse.

Each test builds its own Settings with a unique topic prefix and Ray namespace, so tests never see
each other's data even on a shared developer broker. No broker means a loud failure, not a skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from confluent_kafka.admin import AdminClient

from choreography.config import Settings, settings_from_metadata
from choreography.system import System
from events.base import StoredEvent
from events.log.reader import read_topic

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("CHOREO_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    try:
        brokers = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0}).list_topics(timeout=10).brokers
    except Exception as exc:
        pytest.fail(f"no Kafka broker at {BOOTSTRAP} ({exc}); run `choreo kafka start`", pytrace=False)
    assert brokers, f"no Kafka broker at {BOOTSTRAP}"
    return BOOTSTRAP


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    if not ray.is_initialized():
        ray.init(include_dashboard=False, namespace="choreo-tests", log_to_driver=False)
    yield
    ray.shutdown()


SettingsFactory = Callable[..., Settings]


def isolated_metadata(workdir: Path, bootstrap: str, partitions: int, letter: str = "t") -> dict[str, Any]:
    """cluster.yaml's `metadata` on fresh topics (a unique prefix), a unique Ray namespace, and a
    ClickHouse and state dir under `workdir`, with `partitions` per service topic."""
    metadata: dict[str, Any] = yaml.safe_load((REPO / "cluster.yaml").read_text())["metadata"]
    run = uuid.uuid4().hex[:8]
    metadata["namespace"] = f"{letter}{run}"
    metadata["topic_prefix"] = f"{letter}{run}-"
    metadata["kafka"] = {"bootstrap_servers": bootstrap}
    metadata["clickhouse"] = {"dsn": f"chdb://{workdir / 'clickhouse'}"}
    metadata["state_dir"] = str(workdir / "state")
    for topic in metadata["topics"]:
        if not topic["name"].startswith("choreo-"):
            topic["partitions"] = partitions
    return metadata


@pytest.fixture
def make_settings(kafka_bootstrap: str, tmp_path: Path) -> SettingsFactory:
    def make(shards: int = 4, partitions: int = 8, snapshot_every: int = 1000, **extra: Any) -> Settings:
        metadata = isolated_metadata(tmp_path, kafka_bootstrap, partitions)
        metadata["services"]["order"].update(shards=shards, snapshot_every=snapshot_every)
        metadata.update(extra)
        return settings_from_metadata(metadata, env={})

    return make


@pytest.fixture
def start_system(ray_runtime: None) -> Iterator[Callable[..., System]]:
    started: list[System] = []

    def start(settings: Settings, **options: Any) -> System:
        system = System(settings, **options)
        started.append(system)
        return system

    yield start
    for system in started:
        system.close()


def read_log(settings: Settings, topic: str, skip_undecodable: bool = False) -> list[StoredEvent]:
    """Every committed event of a topic, decoded, straight from Kafka."""
    return list(
        read_topic(
            settings.kafka.client_config(),
            settings.topic_name(topic),
            settings.registry(),
            skip_undecodable=skip_undecodable,
        )
    )

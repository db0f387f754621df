"""The one bootstrap: reads cluster.yaml's `metadata:` topology and the environment into settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actors.aggregate import Aggregate
from actors.live_spans import TracingConfig
from choreography.domain import (
    IMPORT_PATH,
    DeclarationError,
    load_aggregate,
    load_projection,
    load_registry,
    load_wiring,
    resolve,
)
from choreography.policies import On, source_services
from events.log.secrets import env_reference, file_reference, is_reference, is_secret
from events.log.topics import DLQ_TOPIC, OWNERS_TOPIC
from events.registry import Registry
from projections.base import Projection
from projections.dsn import redacted, with_password

ENV_KAFKA_BOOTSTRAP = "CHOREO_KAFKA_BOOTSTRAP"
ENV_CLICKHOUSE_DSN = "CHOREO_CLICKHOUSE_DSN"
ENV_CONFIG = "CHOREO_CONFIG"
ENV_TOPIC_PREFIX = "CHOREO_TOPIC_PREFIX"
ENV_NAMESPACE = "CHOREO_NAMESPACE"
ENV_KAFKA_PASSWORD = "CHOREO_KAFKA_PASSWORD"
ENV_CLICKHOUSE_PASSWORD = "CHOREO_CLICKHOUSE_PASSWORD"
"""Either password may instead be in a file named by the variable with `_FILE` appended."""
DEFAULT_CONFIG = "cluster.yaml"


class ConfigError(ValueError):
    """cluster.yaml or the environment is invalid; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    security: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka properties, e.g. security.protocol, sasl.mechanism. A secret (a property
    named *password* or *secret*) is only ever a reference, `${env:NAME}` or `${file:PATH}`,
    resolved by each process that connects (events/log/secrets.py)."""

    @field_validator("security")
    @classmethod
    def _secrets_by_reference(cls, security: dict[str, str]) -> dict[str, str]:
        for key, value in security.items():
            if is_secret(key) and not is_reference(value):
                raise ValueError(
                    f"{key} holds a secret's value; settings travel to every actor, so name where it "
                    f"lives instead: {env_reference(ENV_KAFKA_PASSWORD)} (or set {ENV_KAFKA_PASSWORD}), "
                    f"or {file_reference('/path/to/file')}"
                )
        return security

    def client_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.security}


class TopicSpec(Strict):
    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class ServiceSpec(Strict):
    aggregate: str = Field(pattern=IMPORT_PATH)
    """`module:attribute` of the aggregate's class or factory (see actors.aggregate.Aggregate)."""
    messages: str = Field(pattern=IMPORT_PATH)
    """`module:attribute` of the service's events.Messages: its events, commands and upcasters."""
    policies: str | None = Field(default=None, pattern=IMPORT_PATH)
    """`module:attribute` of the service's wiring table, a list of choreography.On rows: the
    other services' events it reacts to and the policy that turns each into its commands."""
    shards: int = Field(ge=1, le=1024)
    snapshot_every: int = Field(default=1000, ge=1)
    """Write a snapshot checkpoint after this many events per partition."""
    batch_max: int = Field(default=2000, ge=1)
    poll_ms: int = Field(default=25, ge=1, le=10_000)
    """How long shards and policy runners gather a batch; one Kafka transaction per batch."""
    policy_runners: int = Field(default=1, ge=0, le=64)
    """Ray actors running this service's policies (none when it declares no policies)."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Expire an aggregate this many seconds after it asks for it (the aggregate must implement
    actors.aggregate.HasDeadlines; its factory gets `deadline=timedelta(seconds=deadline_s)`)."""
    dedup_window_s: float = Field(default=86_400.0, gt=0)
    """How long a client command id is remembered: a resubmit within it returns the original
    outcome. The `<service>-dedup` topic must retain at least this long."""
    max_aggregates: int | None = Field(default=50_000, ge=1)
    """Aggregates each shard keeps in memory (passivation): the least recently used beyond it wait
    in the shard's local aggregate store until their next command. null keeps all in memory."""


class ProjectionSpec(Strict):
    projection: str = Field(pattern=IMPORT_PATH)
    """`module:attribute` of the projections.Projection subclass."""
    topics: list[str] = Field(min_length=1)
    batch_size: int = Field(default=50_000, ge=1)
    flush_interval_ms: int = Field(default=200, ge=1)


class ClickHouseSettings(Strict):
    dsn: str = "chdb://.choreo/clickhouse"

    def __repr_args__(self) -> Any:
        yield "dsn", redacted(self.dsn)  # repr and str never show a password

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb://")


class Settings(Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    topics: list[TopicSpec] = Field(min_length=1)
    services: dict[str, ServiceSpec] = Field(min_length=1)
    projections: dict[str, ProjectionSpec] = Field(default_factory=dict)
    namespace: str = Field(default="choreo", pattern=r"^[A-Za-z0-9_-]+$")
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    """Prepended to every topic name; lets several deployments (or test runs) share a broker."""
    state_dir: str = ".choreo/state"
    """Local directory for the shards' dedup indexes (caches of the dedup topics)."""
    schema_snapshot: str | None = None
    """The committed JSON-schema snapshot of every declared event (`choreo schemas check`),
    relative to the cluster file."""
    python_path: list[str] = Field(default_factory=list)
    """Directories (relative to the cluster file) that hold the declared code when it is not
    installed: put on sys.path by the bootstrap and on the PYTHONPATH of every actor."""
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    """Live spans on the write path (see actors/live_spans.py); derived traces need no setting."""
    workload: str | None = Field(default=None, pattern=IMPORT_PATH)
    """`module:attribute` of the default workload of `choreo loadtest` and `choreo demo`
    (see choreography.workload.Workload)."""

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        names = {t.name: t for t in self.topics}
        for service, spec in self.services.items():
            for kind in ("commands", "events", "snapshots", "dedup"):
                if f"{service}-{kind}" not in names:
                    raise ValueError(f"services.{service}: topic '{service}-{kind}' is not declared")
            events = names[f"{service}-events"]
            for kind in ("commands", "snapshots", "dedup"):
                other = names[f"{service}-{kind}"]
                if events.partitions != other.partitions:
                    raise ValueError(f"services.{service}: {other.name} must have as many partitions as {events.name}")
            retention = int(names[f"{service}-dedup"].config.get("retention.ms", "-1"))
            window_ms = spec.dedup_window_s * 1000
            if 0 <= retention < window_ms:
                raise ValueError(
                    f"services.{service}.dedup_window_s: {spec.dedup_window_s:g}s is longer than the retention of "
                    f"{service}-dedup ({retention} ms)"
                )
        if self.tracing.live and "clickhouse" in self.tracing.exporters and not self.projections:
            raise ValueError(
                "tracing.exporters: clickhouse writes otel_traces through a projection host: declare a projection"
            )
        for name, proj in self.projections.items():
            for topic in proj.topics:
                if topic not in names:
                    raise ValueError(f"projections.{name}.topics: topic {topic!r} is not declared")
        self._check_domain()
        return self

    def _check_domain(self) -> None:
        """Import every declared aggregate, message bundle, wiring table, projection and workload,
        and check them against the runtime's contracts (messages fit their service, policies react
        to declared events of declared services). Where a policy's commands go is known only when
        it runs: the policy runner dead-letters the event behind a command for an undeclared service."""
        try:
            registry = self.registry()
            for service in self.services:
                self.aggregate(service)
                for row in self.wiring(service):
                    source = row.event.aggregate_type
                    if source not in self.services:
                        raise DeclarationError(
                            f"metadata.services.{service}.policies: reacts to {row.event.type_name()} of "
                            f"undeclared service {source!r}"
                        )
                    if row.event.type_name() not in registry.events:
                        raise DeclarationError(
                            f"metadata.services.{service}.policies: reacts to {row.event.type_name()}, which "
                            f"services.{source}.messages does not declare"
                        )
            for name in self.projections:
                self.projection(name)
            if self.workload:
                resolve(self.workload, "metadata.workload")
        except DeclarationError as exc:
            raise ValueError(str(exc).removeprefix("metadata.")) from None

    # ---- the declared domain (imported in whichever process asks) ---------------------------

    def messages_paths(self) -> dict[str, str]:
        return {service: spec.messages for service, spec in self.services.items()}

    def registry(self) -> Registry:
        """Every declared service's commands and events, with their upcasters."""
        return load_registry(self.messages_paths())

    def aggregate(self, service: str) -> Aggregate[Any]:
        spec = self.services[service]
        return load_aggregate(spec.aggregate, f"metadata.services.{service}.aggregate", service, spec.deadline_s)

    def wiring(self, service: str) -> list[On]:
        return load_wiring(self.services[service].policies, f"metadata.services.{service}.policies", service)

    def sources(self, service: str) -> list[str]:
        """The services whose events `service` reacts to."""
        return source_services(self.wiring(service))

    def projection(self, name: str) -> Projection:
        return load_projection(self.projections[name].projection, f"metadata.projections.{name}.projection", name)

    def topic(self, name: str) -> TopicSpec:
        for t in self.topics:
            if t.name == name:
                return t
        raise KeyError(name)

    def all_topics(self) -> list[TopicSpec]:
        """The declared topics, plus the runtime's own partition map (see events.log.owners),
        replicated like the dead-letter topic unless cluster.yaml declares it."""
        if any(t.name == OWNERS_TOPIC for t in self.topics):
            return list(self.topics)
        like = next((t for t in self.topics if t.name == DLQ_TOPIC), None)
        config = {"cleanup.policy": "compact"}
        if like is not None and "min.insync.replicas" in like.config:
            config["min.insync.replicas"] = like.config["min.insync.replicas"]
        rf = like.replication_factor if like is not None else 3
        return [*self.topics, TopicSpec(name=OWNERS_TOPIC, partitions=1, replication_factor=rf, config=config)]

    def topic_name(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def partitions(self, service: str) -> int:
        return self.topic(f"{service}-events").partitions


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load cluster.yaml (or $CHOREO_CONFIG) and apply environment overrides."""
    env = dict(os.environ) if env is None else env
    cfg_path = Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG)
    doc = _read_yaml(cfg_path)
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        raise ConfigError(f"{cfg_path}: missing the 'metadata:' mapping with the Choreo topology")
    metadata = dict(doc["metadata"])
    base = cfg_path.resolve().parent  # paths in the file are relative to it
    if isinstance(metadata.get("python_path"), list):
        metadata["python_path"] = [str((base / str(d)).resolve()) for d in metadata["python_path"]]
    if isinstance(metadata.get("schema_snapshot"), str):
        metadata["schema_snapshot"] = str(base / metadata["schema_snapshot"])
    return settings_from_metadata(metadata, env, source=str(cfg_path))


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def settings_from_metadata(metadata: dict[str, Any], env: dict[str, str], source: str = "metadata") -> Settings:
    data = dict(metadata)
    if env.get(ENV_KAFKA_BOOTSTRAP):
        data["kafka"] = {**data.get("kafka", {}), "bootstrap_servers": env[ENV_KAFKA_BOOTSTRAP]}
    password = _secret_reference(env, ENV_KAFKA_PASSWORD)
    if password is not None:  # the reference, never the value: each process reads it itself
        kafka = data.get("kafka") or {}
        data["kafka"] = {**kafka, "security": {"sasl.password": password, **(kafka.get("security") or {})}}
    if env.get(ENV_CLICKHOUSE_DSN):
        data["clickhouse"] = {**data.get("clickhouse", {}), "dsn": env[ENV_CLICKHOUSE_DSN]}
    clickhouse_password = _secret_reference(env, ENV_CLICKHOUSE_PASSWORD)
    dsn = (data.get("clickhouse") or {}).get("dsn")
    if clickhouse_password and isinstance(dsn, str) and dsn.startswith("http"):  # a server's, by reference
        data["clickhouse"] = {**data["clickhouse"], "dsn": with_password(dsn, clickhouse_password)}
    if env.get(ENV_TOPIC_PREFIX):
        data["topic_prefix"] = env[ENV_TOPIC_PREFIX]
    if env.get(ENV_NAMESPACE):
        data["namespace"] = env[ENV_NAMESPACE]
    for directory in data.get("python_path") or []:  # before the domain is imported and checked
        if isinstance(directory, str) and str(Path(directory).resolve()) not in sys.path:
            sys.path.insert(0, str(Path(directory).resolve()))
    try:
        settings = Settings.model_validate(_stringify_topic_configs(data))
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid metadata: {_prefixed(exc)}") from None
    return settings.model_copy(
        update={
            "clickhouse": ClickHouseSettings(dsn=resolve_dsn(settings.clickhouse.dsn)),
            "state_dir": str(Path(settings.state_dir).expanduser().resolve()),
            "python_path": [str(Path(d).resolve()) for d in settings.python_path],
        }
    )


def _secret_reference(env: dict[str, str], variable: str) -> str | None:
    """The reference to a secret the environment provides (`variable`, or the file `variable_FILE`
    names): settings carry it, never the value, and each process that connects reads it."""
    if env.get(variable):
        return env_reference(variable)
    if env.get(f"{variable}_FILE"):
        return file_reference(env[f"{variable}_FILE"])
    return None


def resolve_dsn(dsn: str) -> str:
    """Make an embedded chdb:// path absolute so every process points at the same directory."""
    if not dsn.startswith("chdb://"):
        return dsn
    rest = dsn[len("chdb://") :]
    if rest in ("", "memory", ":memory:") or rest.startswith("/"):
        return dsn
    return "chdb://" + str(Path(rest).resolve())


def _stringify_topic_configs(data: dict[str, Any]) -> dict[str, Any]:
    topics = data.get("topics")
    if isinstance(topics, list):
        data["topics"] = [
            {**t, "config": {k: str(v) for k, v in (t.get("config") or {}).items()}} if isinstance(t, dict) else t
            for t in topics
        ]
    return data


def _prefixed(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"metadata.{loc}: {msg}" if loc else f"metadata.{msg}")
    return "; ".join(parts)


def validate_cluster_file(path: str | Path) -> Settings:
    """Validate the whole file as `ray up` would, then the Choreo topology in its `metadata:`."""
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg_path = Path(path)
    doc = _read_yaml(cfg_path)
    try:
        validate_config(prepare_config(copy.deepcopy(doc)))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        path_hint = ".".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        where = f" at '{path_hint}'" if path_hint else ""
        raise ConfigError(f"{cfg_path}: Ray rejects the cluster config{where}: {first}") from None
    return load_settings(cfg_path, env={})

"""The public client API: connect, submit commands, read state, query analytics."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from itertools import takewhile
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from actors.aggregate import fold
from actors.live_spans import TracingConfig
from actors.outcomes import Accepted, Outcome, Rejected
from actors.shard import ShardConfig
from actors.shard_actor import shard_actor_name, spawn_shard
from choreography.config import Settings, load_settings
from choreography.errors import (
    CommandRejected,
    NotDeployed,
    ProjectionTimeout,
    QueryError,
    QueryRejected,
    ShardUnavailable,
)
from choreography.lag import LAG_MONITOR, LagRow, consumer_lag, spawn_lag_monitor
from choreography.policy_runner import RunnerConfig, runner_actor_name, spawn_policy_runner
from choreography.redrive import Redriven
from choreography.rescale import Rescaled, rescale, rescale_runners
from choreography.stuck import StuckSaga
from choreography.topology import ensure_topics
from choreography.traces import Trace
from events.base import Command, DomainModel, StoredEvent
from events.log.dlq import DeadLetter, read_dead_letters
from events.log.kafka_io import write_outage
from events.log.owners import OwnersLog, PartitionOwners, owners_of
from events.log.reader import read_topic
from events.log.topics import DLQ_TOPIC, OWNERS_TOPIC, events_topic, partition_for, routes_group
from projections.host import host_names, spawn_projection_hosts
from projections.readonly import check_read_only
from projections.sink import QueryResult

log = logging.getLogger("choreo.system")


def shard_config(settings: Settings, service: str, shard: int) -> ShardConfig:
    spec = settings.services[service]
    return ShardConfig(
        service=service,
        aggregate=spec.aggregate,
        messages=spec.messages,
        shard=shard,
        shards=spec.shards,
        partitions=settings.partitions(service),
        kafka=settings.kafka.client_config(),
        namespace=settings.namespace,
        topic_prefix=settings.topic_prefix,
        snapshot_every=spec.snapshot_every,
        batch_max=spec.batch_max,
        poll_ms=spec.poll_ms,
        deadline_s=spec.deadline_s,
        dedup_window_s=spec.dedup_window_s,
        max_aggregates=spec.max_aggregates,
        state_dir=settings.state_dir,
        python_path=tuple(settings.python_path),
        tracing=live_tracing(settings),
    )


def live_tracing(settings: Settings) -> TracingConfig:
    """metadata.tracing with what the actors' exporters need to find the read store's host."""
    hosts = host_names(settings.clickhouse.dsn, list(settings.projections))
    return settings.tracing.model_copy(
        update={"clickhouse_host": next(iter(hosts.values()), ""), "namespace": settings.namespace}
    )


def runner_config(settings: Settings, service: str, index: int) -> RunnerConfig:
    return RunnerConfig(
        service=service,
        policies=settings.services[service].policies or "",
        messages=settings.messages_paths(),
        index=index,
        runners=settings.services[service].policy_runners,
        kafka=settings.kafka.client_config(),
        partitions={s: settings.partitions(s) for s in settings.services},
        namespace=settings.namespace,
        topic_prefix=settings.topic_prefix,
        poll_ms=settings.services[service].poll_ms,
        python_path=tuple(settings.python_path),
        tracing=live_tracing(settings),
    )


class System:
    """A handle on a running Choreo deployment: shard actors, policy runners, projections."""

    def __init__(
        self,
        settings: Settings,
        *,
        ray_address: str | None = None,
        detached: bool = False,
        projections: bool = True,
        policies: bool = True,
        create_topics: bool = True,
        metrics: bool = True,
        wait: bool = True,
        spawn: bool = True,
    ) -> None:
        """`spawn=False` attaches to the actors of a running deployment (NotDeployed when one is
        missing) instead of starting the missing ones; `wait=False` returns before they serve."""
        self.settings = settings
        self.detached = detached
        self.spawn = spawn
        self.registry = settings.registry()
        if not ray.is_initialized():
            ray.init(
                address=ray_address or os.environ.get("RAY_ADDRESS"),
                namespace=settings.namespace,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=os.environ.get("CHOREO_RAY_LOGS") == "1",
            )
        if spawn and not detached and _running(DEPLOYMENT_RECORD, settings.namespace):
            # `choreo deploy` runs this namespace: attach to it, never start a second copy, and
            # leave it running on close.
            log.info("attaching to the deployment running in namespace %s", settings.namespace)
            self.detached, self.spawn, detached, create_topics = True, False, True, False
        if create_topics:
            ensure_topics(settings)
        self.owners: dict[str, PartitionOwners] = {}
        self.owners_log = OwnersLog(
            settings.kafka.client_config(), settings.topic_name(OWNERS_TOPIC), routes_group(settings.namespace)
        )
        if self.spawn:
            fresh = [s for s in settings.services if not _running(shard_actor_name(s, 0), settings.namespace)]
            reset_owners(settings, fresh, self.owners_log)
        self.routes_read = 0.0
        self.shards: dict[str, list[Any]] = {}
        self.refresh_routes()
        self.shards = {
            service: [
                self._actor(
                    shard_actor_name(service, i),
                    partial(spawn_shard, shard_config(settings, service, i), detached=detached),
                )
                for i in range(self.owners[service].shards)
            ]
            for service in settings.services
        }
        self.policy_runners: dict[str, list[Any]] = {}
        if policies:
            self.policy_runners = {
                service: [
                    self._actor(
                        runner_actor_name(service, i),
                        partial(spawn_policy_runner, runner_config(settings, service, i), detached=detached),
                    )
                    for i in range(spec.policy_runners)
                ]
                for service, spec in settings.services.items()
                if spec.policies
            }
        self.projection_hosts: dict[str, Any] = {}
        if projections and settings.projections and not self.spawn:
            names = host_names(settings.clickhouse.dsn, list(settings.projections))
            self.projection_hosts = {name: self._actor(actor, None) for name, actor in names.items()}
        elif projections and settings.projections:
            self.projection_hosts = spawn_projection_hosts(
                settings.clickhouse.dsn,
                settings.kafka.client_config(),
                settings.namespace,
                settings.topic_prefix,
                {n: p.model_dump() for n, p in settings.projections.items()},
                settings.messages_paths(),
                detached=detached,
                python_path=settings.python_path,
            )
        self.lag_monitor: Any = (
            self._actor(LAG_MONITOR, partial(spawn_lag_monitor, settings, detached=detached)) if metrics else None
        )
        if wait:
            self.wait_ready()
        tracing = settings.tracing
        if self.spawn and tracing.live and "clickhouse" in tracing.exporters and self.projection_hosts:
            # otel_traces exists from the start, so it can be queried before the first span lands.
            ray.get(next(iter(self.projection_hosts.values())).insert_spans.remote([]))

    def _actor(self, name: str, spawn: Callable[[], Any] | None) -> Any:
        """Start the named actor (or get it, if it runs), or only get it when attaching."""
        if self.spawn and spawn is not None:
            return spawn()
        try:
            return ray.get_actor(name, namespace=self.settings.namespace)
        except ValueError:
            raise NotDeployed(
                f"actor {name} of the deployment in namespace {self.settings.namespace!r} does not run; "
                "run `choreo deploy` to start it"
            ) from None

    def wait_ready(self, timeout: float = 300) -> None:
        """Wait until every actor is up and every shard has rehydrated and serves."""
        shards = [a for actors in self.shards.values() for a in actors]
        ray.get([a.ready.remote(timeout) for a in shards], timeout=timeout)
        ray.get([a.__ray_ready__.remote() for a in self.actors()], timeout=timeout)

    def _hosts(self) -> list[Any]:
        unique: dict[str, Any] = {}
        for host in self.projection_hosts.values():
            unique.setdefault(host._actor_id.hex(), host)
        return list(unique.values())

    def actors(self) -> list[Any]:
        found = [a for actors in self.shards.values() for a in actors]
        found += [a for runners in self.policy_runners.values() for a in runners]
        found += self._hosts()
        return [*found, self.lag_monitor] if self.lag_monitor is not None else found

    def shard(self, service: str, aggregate_id: str) -> Any:
        """The shard actor serving `aggregate_id`, by the partition map last read."""
        return self.shards[service][self._route(service, aggregate_id)]

    def _route(self, service: str, aggregate_id: str) -> int:
        return self.owners[service].owners[partition_for(aggregate_id, self.settings.partitions(service))]

    def refresh_routes(self, min_interval: float = 0.0) -> dict[str, PartitionOwners]:
        """Read the partition map again (a shard answered that a partition moved), and look up
        the shards a rescale started since. Rereads at most once per `min_interval` seconds."""
        if time.monotonic() - self.routes_read < min_interval:
            return self.owners
        s = self.settings
        maps = self.owners_log.read()
        for service in s.services:
            self.owners[service] = owners_of(maps, service, s.services[service].shards, s.partitions(service))
        self.routes_read = time.monotonic()
        for service, actors in self.shards.items():
            for i in range(len(actors), self.owners[service].shards):
                actors.append(self._actor(shard_actor_name(service, i), None))
        return self.owners

    def scale(self, service: str, shards: int, progress: Callable[[str], None] | None = None) -> Rescaled:
        """Change `service`'s shard count while commands keep flowing, moving one partition at a
        time (see choreography/rescale.py)."""
        return rescale(self, service, shards, progress)

    def scale_runners(self, service: str, runners: int, progress: Callable[[str], None] | None = None) -> float:
        """Run `service`'s policies on `runners` runners; returns the seconds its reactions paused
        (see choreography/rescale.py)."""
        return rescale_runners(self, service, runners, progress)

    # ---- commands ----------------------------------------------------------------

    def submit(
        self,
        command: Command,
        timeout: float = 60,
        wait_for: str | None = None,
        wait_timeout: float = 30,
    ) -> list[StoredEvent]:
        """Handle one command. Returns its events, or raises CommandRejected.

        With `wait_for="orders"` it also blocks until that projection holds the events."""
        outcome = self.submit_many([command], timeout=timeout)[0]
        if isinstance(outcome, Rejected):
            raise CommandRejected(outcome.command_id, outcome.code, outcome.reason)
        if wait_for is not None:
            self.wait_for(outcome.events, projection=wait_for, timeout=wait_timeout)
        return outcome.events

    def submit_dict(self, type_name: str, data: dict[str, Any], timeout: float = 60) -> list[StoredEvent]:
        """Validate untrusted input into a command (InvalidCommand on error), then submit it."""
        return self.submit(self.registry.parse_command(type_name, data), timeout=timeout)

    def submit_many(self, commands: Sequence[Command], timeout: float = 120) -> list[Outcome]:
        """Handle many commands with one Ray call per shard and batch. Keeps the input order.

        A shard that dies mid-call is restarted by Ray and the call is retried; the shard
        deduplicates by command id, so each command takes effect exactly once."""
        for cmd in commands:
            if cmd.target not in self.shards:
                raise ValueError(f"no service {cmd.target!r} for {cmd.type_name()}")
        results: list[Outcome | None] = [None] * len(commands)
        pending = list(range(len(commands)))
        deadline = time.monotonic() + timeout
        while pending:
            calls = self._calls(commands, pending)
            refs = [
                self.shards[service][idx].handle.remote([commands[i] for i in chunk]) for chunk, service, idx in calls
            ]
            pending, moved = [], False
            for (chunk, service, idx), ref in zip(calls, refs, strict=True):
                try:
                    outcomes = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                except ShardUnavailable as exc:  # rehydrating, or its broker is unreachable: retried
                    if time.monotonic() >= deadline:
                        raise ShardUnavailable(f"{exc}; resubmit the same commands: they are deduplicated") from None
                    pending += chunk
                    continue
                except (GetTimeoutError, RayActorError) as exc:
                    # A shard a rescale stopped (the map moved its partitions away) is retried where
                    # they went; any other silence is the caller's to retry.
                    if isinstance(exc, GetTimeoutError) or not self._rerouted(service, idx, chunk, commands):
                        outage = write_outage(self.settings.kafka.client_config())
                        raise ShardUnavailable(
                            f"no answer from a shard within {timeout:.0f}s ({type(exc).__name__})"
                            + (f"; {outage}" if outage else "")
                            + "; resubmit the same commands: they are deduplicated by command id"
                        ) from exc
                    pending += chunk
                    continue
                for i, outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, Rejected) and outcome.code == "wrong_shard":
                        pending.append(i)  # its partition is moving: retried at its new owner
                        moved = True
                    else:
                        results[i] = outcome
            if pending:
                if time.monotonic() >= deadline:
                    raise ShardUnavailable(
                        f"{len(pending)} commands found no shard serving their partition within {timeout:.0f}s "
                        "(a partition move that did not finish); resubmit them: they are deduplicated"
                    )
                if moved:
                    self.refresh_routes(min_interval=0.05)
                time.sleep(0.02 if moved else 0.2)
                pending.sort()
        return [r for r in results if r is not None]

    def _calls(self, commands: Sequence[Command], indices: list[int]) -> list[tuple[list[int], str, int]]:
        """Group commands by the shard serving them, in batches of at most the service's batch_max."""
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i in indices:
            cmd = commands[i]
            groups[(cmd.target, self._route(cmd.target, cmd.aggregate_id))].append(i)
        calls: list[tuple[list[int], str, int]] = []
        for (service, idx), members in groups.items():
            step = self.settings.services[service].batch_max
            calls += [(members[start : start + step], service, idx) for start in range(0, len(members), step)]
        return calls

    def _rerouted(self, service: str, idx: int, chunk: list[int], commands: Sequence[Command]) -> bool:
        """Whether the partition map, read again, sends any of `chunk` away from shard `idx`."""
        self.refresh_routes()
        return any(self._route(service, commands[i].aggregate_id) != idx for i in chunk)

    # ---- the write side's reads ----------------------------------------------------

    def state(
        self,
        service: str,
        aggregate_id: str,
        *,
        as_of: datetime | None = None,
        version: int | None = None,
    ) -> tuple[DomainModel, int]:
        """An aggregate's state and version: current (from its shard's memory), or as it was at
        a time or version (rebuilt from the event log)."""
        if as_of is None and version is None:
            state, current = ray.get(self.shard(service, aggregate_id).state.remote(aggregate_id))
            return state, current
        until = list(
            takewhile(
                lambda ev: (
                    (version is None or ev.version <= version) and (as_of is None or ev.envelope.occurred_at <= as_of)
                ),
                self.history(service, aggregate_id),
            )
        )
        state = fold(self.settings.aggregate(service), (ev.payload for ev in until))
        return state, until[-1].version if until else 0

    def history(self, service: str, aggregate_id: str) -> list[StoredEvent]:
        """Every event of one aggregate, oldest first, from its partition of the event log."""
        if service not in self.settings.services:
            raise ValueError(f"unknown service {service!r}; known: {sorted(self.settings.services)}")
        partition = partition_for(aggregate_id, self.settings.partitions(service))
        events = read_topic(
            self.settings.kafka.client_config(),
            self.settings.topic_name(events_topic(service)),
            self.registry,
            partitions=[partition],
            key=aggregate_id.encode(),
        )
        return sorted(events, key=lambda e: e.version)

    # ---- the read side -------------------------------------------------------------

    def _host(self, projection: str | None = None) -> Any:
        if not self.projection_hosts:
            raise RuntimeError("this System was started without projections")
        if projection is None:
            return next(iter(self.projection_hosts.values()))
        try:
            return self.projection_hosts[projection]
        except KeyError:
            raise ValueError(f"unknown projection {projection!r}; running: {sorted(self.projection_hosts)}") from None

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        """Run analytics SQL against the ClickHouse read side. Read-only: one SELECT, WITH, SHOW,
        DESCRIBE, EXPLAIN or EXISTS statement; anything else raises QueryRejected, and a query
        ClickHouse cannot run raises QueryError with its message."""
        check_read_only(sql)  # fail fast; the host checks again with the engine's function list
        try:
            result: QueryResult = ray.get(self._host().query.remote(sql, parameters))
        except RayTaskError as exc:
            if isinstance(exc.cause, QueryRejected | QueryError):
                raise exc.cause from None
            raise
        return result

    def wait_for(self, events: Iterable[StoredEvent], projection: str = "orders", timeout: float = 30) -> None:
        """Block until `projection` has stored every given event (read-your-writes), or raise
        ProjectionTimeout."""
        host = self._host(projection)
        needed: dict[tuple[str, int], int] = {}
        for ev in events:
            key = (ev.topic, ev.partition)
            needed[key] = max(needed.get(key, 0), ev.offset + 1)
        deadline = time.monotonic() + timeout
        while True:
            have = ray.get(host.positions.remote(projection))
            if all(have.get(k, 0) >= v for k, v in needed.items()):
                return
            if time.monotonic() > deadline:
                behind = {f"{t}[{p}]": (have.get((t, p), 0), v) for (t, p), v in needed.items()}
                raise ProjectionTimeout(f"projection {projection!r} did not reach {behind} (have, need) in {timeout}s")
            time.sleep(0.02)

    def projection_status(self) -> dict[str, dict[str, Any]]:
        """Per projection: events, rows, poison, parked, paused, positions, rebuild (see the host)."""
        status: dict[str, dict[str, Any]] = {}
        for host in self._hosts():
            status.update(ray.get(host.status.remote()))
        return status

    def pause_projection(self, name: str) -> None:
        ray.get(self._host(name).pause.remote(name))

    def resume_projection(self, name: str) -> None:
        ray.get(self._host(name).resume.remote(name))

    def rebuild_projection(self, name: str) -> None:
        """Replay the projection from the earliest offset into fresh tables while the live ones keep
        serving, then swap them in (runbook Case 1). Returns at once; follow progress with
        `projection_status()[name]["rebuild"]` (None once swapped in)."""
        ray.get(self._host(name).rebuild.remote(name))

    def saga(self, saga_id: str) -> QueryResult:
        """The ordered, cross-service event trail of one saga: every event whose correlation id
        is `saga_id` (from the `events_raw` projection)."""
        return self.query(
            "SELECT occurred_at, aggregate_type AS service, event_type, aggregate_id, version, "
            "event_id, causation_id, payload FROM events_raw "
            "WHERE correlation_id = %(id)s ORDER BY occurred_at, _offset",
            {"id": saga_id},
        )

    def dead_letters(self) -> list[DeadLetter]:
        return read_dead_letters(self.settings.kafka.client_config(), self.settings.topic_name(DLQ_TOPIC))

    def redrive(self, letters: Sequence[DeadLetter] | None = None, *, stages: Sequence[str] = ()) -> list[Redriven]:
        """Run the failed stage again on dead letters (all by default), decided afresh; letters
        redriven before are skipped (see choreography/redrive.py)."""
        from choreography.redrive import Redriver, select

        chosen = select(self.dead_letters() if letters is None else letters, all_=True, stages=stages)
        redriver = Redriver(self.settings, self.shard, self._host)
        try:
            return redriver.run(chosen)
        finally:
            redriver.close()

    def lag(self) -> list[LagRow]:
        return consumer_lag(self.settings)

    def stuck(self, older_than_s: float = 30.0, limit: int = 100, scan: int = 5_000) -> list[StuckSaga]:
        """Sagas that have not reached their end, whose last event is at least `older_than_s` old
        (among the `scan` most recently active), each with the service that owes the next step
        and what that step waits on: lag, a dead letter or a failed shard (see choreography/sagas.py).
        Reads the `events_raw` projection, so a saga shows once its events are stored there."""
        from choreography.sagas import find_stuck

        return find_stuck(self, older_than_s, limit, scan)

    def trace(self, saga_id: str) -> Trace:
        """The saga's derived trace: a span per command handled and per policy reaction, each under
        its cause, with each hop's waiting in Kafka and processing (see choreography/traces.py).
        Reads the `events_raw` projection; `Trace.connected` says whether it is one tree."""
        from choreography.sagas import find_trace

        return find_trace(self, saga_id)

    def close(self) -> None:
        """Stop cleanly. Actors of a non-detached system are ended; detached ones keep running
        untouched (`choreo down` stops a deployment)."""
        self.owners_log.close()
        if self.detached:
            return
        for host in self._hosts():
            try:
                ray.get(host.stop.remote(), timeout=30)
            except Exception as exc:  # best effort on shutdown
                log.warning("projection host did not stop cleanly: %s", exc)
        for actor in self.actors():
            ray.kill(actor, no_restart=True)


DEPLOYMENT_RECORD = "choreo-deployment"
"""The detached actor in which `choreo deploy` records a deployment's settings."""


def reset_owners(settings: Settings, services: Iterable[str], owners_log: OwnersLog) -> None:
    """Start `services` afresh on the round-robin partition map of their declared shard counts
    (before spawning their shards; no shard of theirs runs)."""
    for service in services:
        owners_log.write(
            service, PartitionOwners.round_robin(settings.services[service].shards, settings.partitions(service))
        )


def _running(actor: str, namespace: str) -> bool:
    try:
        ray.get_actor(actor, namespace=namespace)
    except ValueError:
        return False
    return True


def connect(
    config: str | Path | None = None, *, settings: Settings | None = None, name: str | None = None, **options: Any
) -> System:
    """Bootstrap from cluster.yaml (or $CHOREO_CONFIG) and the environment, and start the system.

    With `name`, attach instead to the deployment `choreo deploy` runs in that Ray namespace, from
    the settings it recorded, without a file: a driver inside the cluster needs nothing else. It
    never starts an actor (NotDeployed when one is missing), and closing it leaves them running."""
    if name is not None:
        from choreography.deployment import attach

        return attach(name)
    return System(settings or load_settings(config), **options)


__all__ = ["Accepted", "Rejected", "System", "connect"]

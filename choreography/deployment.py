"""A deployment with a life of its own on a Ray cluster: `deploy` starts (or keeps) its named,
detached actors, `attach` finds it by namespace without a file, `status` describes every actor,
and `down` drains and stops them.

The deployed settings live in a small detached actor (`choreo-deployment`) in the deployment's
namespace: that is how a driver inside the cluster attaches by name alone."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray

from actors.runtime import actor_options
from actors.shard_actor import shard_actor_name
from choreography.config import Settings
from choreography.errors import NotDeployed
from choreography.lag import LAG_MONITOR, LagRow, consumer_lag
from choreography.policy_runner import runner_actor_name
from choreography.system import DEPLOYMENT_RECORD, System
from choreography.topology import ensure_topics
from events.log.topics import owned_partitions, policy_group, projection_group, shard_group
from projections.host import host_names

log = logging.getLogger("choreo.deployment")

RECORD = DEPLOYMENT_RECORD
Progress = Callable[[int, int, str], None]
"""(actors ready, actors in all, what is awaited) while a deployment comes up."""


class DeploymentRecord:
    """Holds the deployed settings, so that drivers can attach by namespace alone, and the
    fingerprint of the code the actors run, so that a redeploy knows when it changed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deployed_at = time.time()
        self.code = ""

    def get(self) -> tuple[Settings, float]:
        return self.settings, self.deployed_at

    def put(self, settings: Settings) -> None:
        self.settings = settings
        self.deployed_at = time.time()

    def code_fingerprint(self) -> str:
        return self.code

    def put_code(self, fingerprint: str) -> None:
        self.code = fingerprint


RemoteRecord: Any = ray.remote(DeploymentRecord)


def init_ray(namespace: str, address: str | None = None) -> None:
    """Join the Ray cluster at `address` ($RAY_ADDRESS, else the one running on this machine).
    Raises ConnectionError when none runs."""
    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or "auto",
            namespace=namespace,
            logging_level=logging.WARNING,
            log_to_driver=os.environ.get("CHOREO_RAY_LOGS") == "1",
        )


def deploy(settings: Settings, progress: Progress | None = None, timeout: float = 600) -> System:
    """Create or validate the topics, start every actor that does not run yet (healthy ones stay),
    record the settings, and wait until every shard serves and every consumer caught up."""
    say = progress or (lambda done, total, what: None)
    say(0, 1, "topics")
    ensure_topics(settings)
    rescale_running(settings, lambda what: say(0, 1, what))
    options = actor_options(RECORD, settings.namespace, True, settings.python_path, max_restarts=-1)
    record = RemoteRecord.options(**options).remote(settings)
    ray.get(record.put.remote(settings))
    code, deployed_code = code_fingerprint(settings), ray.get(record.code_fingerprint.remote())
    system = System(settings, detached=True, create_topics=False, wait=False)
    if deployed_code and deployed_code != code:
        rolling_restart(settings, say, timeout)
    wait_deployed(system, say, timeout)
    ray.get(record.put_code.remote(code))
    return system


def code_fingerprint(settings: Settings) -> str:
    """A hash of the code a deployment runs: Choreo's packages and every package the cluster file
    declares code from, as this machine has them (`ray up` installs the same on every node)."""
    declared = [s.aggregate for s in settings.services.values()] + [s.messages for s in settings.services.values()]
    declared += [s.policies for s in settings.services.values() if s.policies]
    declared += [p.projection for p in settings.projections.values()] + (
        [settings.workload] if settings.workload else []
    )
    packages = sorted(
        {"actors", "events", "choreography", "projections"} | {path.split(".")[0].split(":")[0] for path in declared}
    )
    digest = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None:
            continue
        roots = [Path(root) for root in spec.submodule_search_locations or []]
        if roots:
            files = sorted((f.relative_to(root).as_posix(), f) for root in roots for f in root.rglob("*.py"))
        else:
            files = [(package, Path(spec.origin))] if spec.origin else []
        for name, path in files:
            digest.update(f"{package}/{name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def rolling_restart(settings: Settings, say: Progress, timeout: float) -> None:
    """Restart the deployment's actors one at a time, so that each runs the code now installed:
    Ray starts each again in a fresh process, where it rehydrates (a shard) or resumes from its
    committed offsets. Commands for a restarting shard wait, or are retried inside the client
    API; the others go on."""
    expected = [a for a in _expected(settings) if a.role != "deployment"]
    for done, status in enumerate(expected):
        try:
            handle = ray.get_actor(status.name, namespace=settings.namespace)
        except ValueError:
            continue  # not running: it starts with the new code anyway
        say(done, len(expected), f"upgrading {status.name}")
        before = int(_ray_entry(handle).get("NumRestarts") or 0)
        ray.kill(handle, no_restart=False)
        deadline = time.monotonic() + timeout
        while int(_ray_entry(handle).get("NumRestarts") or 0) == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray did not restart {status.name} within {timeout:.0f}s")
            time.sleep(0.2)
        if status.role == "shard":
            ray.get(handle.ready.remote(timeout), timeout=timeout)
        else:
            ray.get(handle.__ray_ready__.remote(), timeout=timeout)


def rescale_running(settings: Settings, say: Callable[[str], None]) -> None:
    """Bring the shard and policy-runner counts of a running deployment to `settings`
    (choreography.rescale: shards move live, one partition at a time)."""
    try:
        running = deployed_settings(settings.namespace)
    except NotDeployed:
        return
    changes = [
        (service, field, getattr(spec, field))
        for service, spec in settings.services.items()
        if service in running.services
        for field in ("shards", "policy_runners")
        if getattr(running.services[service], field) != getattr(spec, field)
    ]
    if not changes:
        return
    system = System(running, detached=True, create_topics=False, wait=False, spawn=False)
    for service, what, count in changes:
        if what == "shards":
            system.scale(service, count, say)
        else:
            system.scale_runners(service, count, say)


def wait_deployed(system: System, say: Progress, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    shards = [a for actors in system.shards.values() for a in actors]
    pending = {a.ready.remote(timeout): a for a in shards}
    total = len(shards)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.1, deadline - time.monotonic()))
        if not done and time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pending)} of {total} shards did not serve within {timeout:.0f}s")
        for ref in done:
            pending.pop(ref)
        say(total - len(pending), total, "shards rehydrated")
    ray.get([a.__ray_ready__.remote() for a in system.actors()], timeout=max(1.0, deadline - time.monotonic()))
    # Caught up means with what the topics held when the wait began: under a live load the lag
    # never reaches 0. A transactional partition ends with a commit marker that a caught-up group
    # never consumes, so a lag of 1 per partition is caught up.
    rows = _lag_of_running_consumers(system.settings)
    targets = {(row.group, row.topic, row.partition): row.end for row in rows}
    while True:
        behind = sum(
            max(0, targets.get((row.group, row.topic, row.partition), row.end) - max(row.committed, 0) - 1)
            for row in rows
        )
        say(total, total, f"consumers {behind:,} events behind")
        if behind == 0:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the consumers are still {behind:,} events behind after {timeout:.0f}s")
        time.sleep(0.5)
        rows = _lag_of_running_consumers(system.settings)


def _lag_of_running_consumers(settings: Settings) -> list[LagRow]:
    """Lag of every group but the policy stages scaled to 0 runners (their lag only grows)."""
    stopped = {policy_group(settings.namespace, s) for s, spec in settings.services.items() if not spec.policy_runners}
    return [row for row in consumer_lag(settings) if row.group not in stopped]


def attach(namespace: str, address: str | None = None) -> System:
    """The deployment running in `namespace`, from its recorded settings; never starts a copy."""
    init_ray(namespace, address)
    settings = deployed_settings(namespace)
    system = System(settings, detached=True, create_topics=False, wait=False, spawn=False)
    system.wait_ready()
    return system


def deployed_settings(namespace: str) -> Settings:
    try:
        record = ray.get_actor(RECORD, namespace=namespace)
    except ValueError:
        raise NotDeployed(f"no Choreo deployment in Ray namespace {namespace!r}; run `choreo deploy`") from None
    settings: Settings = ray.get(record.get.remote())[0]
    return settings


@dataclass
class ActorStatus:
    name: str
    role: str
    state: str
    node: str = ""
    pid: int | None = None
    restarts: int = 0
    phase: str = ""
    detail: str = ""
    partitions: list[int] = field(default_factory=list)
    aggregates: int | None = None
    rss_mb: float | None = None
    lag: int | None = None
    groups: list[str] = field(default_factory=list)
    """The consumer groups whose lag is the actor's (a shard shares its service's group)."""

    def as_dict(self) -> dict[str, Any]:
        described = asdict(self)
        del described["groups"]
        return described


def status(settings: Settings, timeout: float = 5) -> list[ActorStatus]:
    """Every actor of the deployment: node, partitions, phase, restarts, lag, aggregates in memory
    and memory used. An actor that does not answer within `timeout` is reported as such."""
    found = {a.name: a for a in _expected(settings)}
    handles: dict[str, Any] = {}
    for status in found.values():
        try:
            handles[status.name] = ray.get_actor(status.name, namespace=settings.namespace)
        except ValueError:
            continue
        entry = _ray_entry(handles[status.name])
        status.state = entry.get("State", "UNKNOWN")
        status.node = (entry.get("Address") or {}).get("NodeID", "")[:8]
        status.pid = entry.get("Pid") or None
        status.restarts = int(entry.get("NumRestarts") or 0)
    calls: dict[str, Any] = {}
    for status in found.values():
        if status.state in ("ALIVE", "RESTARTING") and status.role in ("shard", "policy", "projections"):
            handle = handles[status.name]
            calls[status.name] = (handle.status if status.role == "projections" else handle.info).remote()
    for name, ref in calls.items():
        try:
            info = ray.get(ref, timeout=timeout)
        except Exception as exc:
            found[name].phase, found[name].detail = "unresponsive", type(exc).__name__
            continue
        _merge(found[name], info)
    lag = _lag_by_group(settings)
    for status in found.values():
        status.lag = sum(lag.get(group, 0) for group in status.groups) if status.groups else None
    return list(found.values())


def down(settings: Settings, report: Callable[[str], None] | None = None) -> list[str]:
    """Drain and stop every actor of the deployment: each finishes its current batch and commits
    (or aborts) its transaction, then is killed without restart. Returns the names stopped."""
    say = report or (lambda _: None)
    stopped = []
    for status in _expected(settings):
        try:
            handle = ray.get_actor(status.name, namespace=settings.namespace)
        except ValueError:
            continue
        if status.role != "deployment":
            try:
                ray.get(handle.stop.remote(), timeout=60)
            except Exception as exc:  # a dead or stuck actor is killed all the same
                log.warning("%s did not stop cleanly: %s", status.name, exc)
        ray.kill(handle, no_restart=True)
        stopped.append(status.name)
        say(f"stopped {status.name}")
    return stopped


def _expected(settings: Settings) -> list[ActorStatus]:
    """The actors a deployment of `settings` runs, by name and role, the record last."""
    ns = settings.namespace
    found = []
    for service, spec in settings.services.items():
        parts = settings.partitions(service)
        groups = [shard_group(ns, service)]
        for i in range(spec.shards):
            owned = owned_partitions(i, spec.shards, parts)
            found.append(ActorStatus(shard_actor_name(service, i), "shard", "MISSING", partitions=owned, groups=groups))
        if spec.policies:
            groups = [policy_group(ns, service)]
            found += [
                ActorStatus(runner_actor_name(service, i), "policy", "MISSING", groups=groups)
                for i in range(spec.policy_runners)
            ]
    hosts: dict[str, list[str]] = {}
    for name, actor in host_names(settings.clickhouse.dsn, list(settings.projections)).items():
        hosts.setdefault(actor, []).append(projection_group(ns, name))
    found += [ActorStatus(actor, "projections", "MISSING", groups=groups) for actor, groups in hosts.items()]
    found.append(ActorStatus(LAG_MONITOR, "metrics", "MISSING"))
    found.append(ActorStatus(RECORD, "deployment", "MISSING"))
    return found


def _ray_entry(handle: Any) -> dict[str, Any]:
    """Ray's own record of an actor (from the GCS; no dashboard needed): state, node, pid, restarts."""
    from ray._private import state

    try:
        entry: dict[str, Any] = state.actors(handle._actor_id.hex())
    except Exception as exc:  # a private API: status degrades to what the actors say themselves
        log.debug("no GCS record of %s: %s", handle, exc)
        return {}
    return entry


def _merge(status: ActorStatus, info: dict[str, Any]) -> None:
    if status.role == "projections":  # name -> projection status
        paused = sorted(name for name, p in info.items() if p.get("paused"))
        status.phase = "running"
        status.detail = f"{len(info)} projections" + (f", paused: {', '.join(paused)}" if paused else "")
    else:
        status.phase = str(info.get("phase", ""))
        status.detail = str(info.get("detail") or "")
        status.aggregates = info.get("aggregates")
        if isinstance(info.get("partitions"), list):  # as served: a rescale may be moving them
            status.partitions = info["partitions"]
    status.rss_mb = info.get("rss_mb") if isinstance(info.get("rss_mb"), float) else status.rss_mb


def _lag_by_group(settings: Settings) -> dict[str, int]:
    lag: dict[str, int] = {}
    try:
        for row in consumer_lag(settings):
            lag[row.group] = lag.get(row.group, 0) + row.lag
    except Exception as exc:  # no broker: status still lists the actors
        log.warning("consumer lag unavailable: %s", exc)
    return lag

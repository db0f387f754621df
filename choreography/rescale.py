"""Live rescaling: change a service's shard count while commands keep flowing.

Partitions move one at a time, each in three steps:
1. the partition map (events.log.owners) names the new owner, so clients route there;
2. the old owner snapshots the partition, stops taking its commands and drops its producer;
3. the new owner fences the partition's transactional id (any zombie of the old owner), rehydrates
   it beside the partitions it serves, and serves it.
Only the moving partition pauses: a command for it that reaches either shard meanwhile is answered
`wrong_shard`, and the client API retries it at the map's owner. A shard that Ray restarts in the
middle reads the map as it stands. Scaling up starts the new shards (owning nothing) first;
scaling down stops the emptied ones last."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray

from actors.shard_actor import shard_actor_name, spawn_shard
from choreography.config import Settings
from events.log.owners import PartitionOwners

if TYPE_CHECKING:
    from choreography.system import System


@dataclass
class Move:
    partition: int
    source: int
    target: int
    paused_s: float
    """From the map naming the new owner to the new owner serving: the longest any command of
    this partition could wait."""
    rehydrate_s: float


@dataclass
class Rescaled:
    service: str
    before: int
    after: int
    seconds: float = 0.0
    moves: list[Move] = field(default_factory=list)

    @property
    def longest_pause_s(self) -> float:
        return max((m.paused_s for m in self.moves), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "before": self.before, "after": self.after, "seconds": self.seconds,
            "longest_pause_s": self.longest_pause_s, "moves": [m.__dict__ for m in self.moves],
        }  # fmt: skip


def scaled_settings(
    settings: Settings, service: str, shards: int | None = None, runners: int | None = None
) -> Settings:
    spec = settings.services[service]
    spec = spec.model_copy(update={"shards": spec.shards if shards is None else shards})
    spec = spec.model_copy(update={"policy_runners": spec.policy_runners if runners is None else runners})
    return settings.model_copy(update={"services": {**settings.services, service: spec}})


def known(settings: Settings, service: str) -> None:
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")


def rescale_runners(system: System, service: str, runners: int, progress: Callable[[str], None] | None = None) -> float:
    """Run `service`'s policies on `runners` runners. Runners split the source partitions by their
    count, so they are not moved one at a time: every runner of the service finishes its batch,
    commits and stops, then the new set starts at the committed offsets. The service's reactions
    pause meanwhile (the seconds returned); nothing is lost or handled twice, and the other
    services, and clients, go on. The new runners' transactional ids fence any old one left."""
    from choreography.policy_runner import runner_actor_name, spawn_policy_runner
    from choreography.system import runner_config

    say = progress or (lambda what: None)
    settings = system.settings
    known(settings, service)
    if not settings.services[service].policies:
        raise ValueError(f"{service} declares no policies, so it runs no policy runners")
    if not 0 <= runners <= 64:
        raise ValueError(f"{service} can run 0 to 64 policy runners, not {runners}")
    started = time.monotonic()
    for i, actor in enumerate(system.policy_runners.get(service, [])):
        say(f"stopping {runner_actor_name(service, i)}")
        stop_actor(actor, runner_actor_name(service, i), settings.namespace)
    target = scaled_settings(settings, service, runners=runners)
    say(f"starting {runners} policy runners of {service}")
    fresh = [spawn_policy_runner(runner_config(target, service, i), detached=system.detached) for i in range(runners)]
    ray.get([a.__ray_ready__.remote() for a in fresh])
    system.policy_runners[service] = fresh
    _settle(system, target)
    return time.monotonic() - started


def rescale(system: System, service: str, shards: int, progress: Callable[[str], None] | None = None) -> Rescaled:
    """Move `service` to `shards` shards, one partition at a time (see the module docstring)."""
    from choreography.system import shard_config

    say = progress or (lambda what: None)
    settings = system.settings
    known(settings, service)
    partitions = settings.partitions(service)
    if not 1 <= shards <= partitions:
        raise ValueError(f"{service} can run 1 to {partitions} shards (one per partition at most), not {shards}")
    started = time.monotonic()
    current = system.refresh_routes()[service]
    report = Rescaled(service, current.shards, shards)
    actors = system.shards[service]
    reconcile(actors, current, say)
    if current.shards == shards and current == PartitionOwners.round_robin(shards, partitions, current.epoch):
        return report
    # Recorded before new shards read it (a map no one wrote yet is round-robin); the write also
    # readies the producer that each move then writes with.
    system.owners_log.write(service, current)
    target = scaled_settings(settings, service, shards)
    for i in range(len(actors), shards):
        say(f"starting {shard_actor_name(service, i)}")
        actors.append(spawn_shard(shard_config(target, service, i), detached=system.detached))
    ray.get([a.ready.remote() for a in actors[current.shards :]])
    goal = PartitionOwners.round_robin(shards, partitions)
    owners = current
    for p in range(partitions):
        source, dest = owners.owners[p], goal.owners[p]
        if source == dest:
            continue
        say(f"moving partition {p}: shard {source} -> shard {dest}")
        begun = time.monotonic()
        owners = owners.moved(p, dest)
        system.owners_log.write(service, owners)
        system.owners[service] = owners
        ray.get(actors[source].release.remote(p))
        rehydrate_s = ray.get(actors[dest].acquire.remote(p))
        report.moves.append(Move(p, source, dest, time.monotonic() - begun, rehydrate_s))
    final = PartitionOwners(shards, goal.owners, owners.epoch + 1)
    system.owners_log.write(service, final)
    system.owners[service] = final
    for i in range(shards, len(actors)):
        say(f"stopping {shard_actor_name(service, i)}, emptied")
        stop_actor(actors[i], shard_actor_name(service, i), settings.namespace)
    del actors[shards:]
    _settle(system, scaled_settings(system.settings, service, shards=shards))
    report.seconds = time.monotonic() - started
    return report


def _settle(system: System, settings: Settings) -> None:
    """The system runs `settings` now; a deployment records them, so that attaching drivers and
    `choreo status` see the new counts."""
    from choreography.system import DEPLOYMENT_RECORD

    system.settings = settings
    if system.detached:
        ray.get(ray.get_actor(DEPLOYMENT_RECORD, namespace=settings.namespace).put.remote(settings))


def reconcile(actors: list[Any], owners: PartitionOwners, say: Callable[[str], None]) -> None:
    """Make every shard serve exactly the partitions the map gives it. A rescale cut short (its
    driver died mid-move) can leave a partition released and not yet adopted, or not yet released."""
    served = [set(info.get("partitions", ())) for info in ray.get([a.ready.remote() for a in actors])]
    for i, partitions in enumerate(served):
        for p in sorted(partitions):
            if owners.owners[p] != i:
                say(f"shard {i} releases partition {p}, which the map gives shard {owners.owners[p]}")
                ray.get(actors[i].release.remote(p))
    missing = [(p, owner) for p, owner in enumerate(owners.owners) if p not in served[owner]]
    for p, owner in missing:
        say(f"shard {owner} takes partition {p} over, as the map says")
    ray.get([actors[owner].acquire.remote(p) for p, owner in missing])


def stop_actor(actor: Any, name: str, namespace: str, timeout: float = 60) -> None:
    """Stop a shard or policy runner cleanly and kill it, then wait until Ray has released its name, so that a
    later rescale can start a shard under that name again."""
    ray.get(actor.stop.remote(), timeout=timeout)
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"Ray did not release the actor name {name} within {timeout:.0f}s")

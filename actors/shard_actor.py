"""The Ray actor that hosts one Shard. Ray restarts it after a crash; __init__ rehydrates."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from actors import aggregate_for
from actors.outcomes import Outcome
from actors.shard import Shard, ShardConfig
from events import default_registry
from events.base import Command, DomainModel


class ShardActor:
    def __init__(self, config: ShardConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.config = config
        self.shard = Shard(config, aggregate_for(config.service), default_registry())

    def handle(self, commands: list[Command]) -> list[Outcome]:
        return self.shard.handle(commands)

    def state(self, aggregate_id: str) -> tuple[DomainModel, int]:
        return self.shard.state(aggregate_id)

    def dump(self) -> dict[str, tuple[DomainModel, int]]:
        """Every aggregate this shard holds, with its version (for audits and tests)."""
        return {k: (e.state, e.version) for k, e in self.shard.entries.items()}

    def snapshot_now(self) -> int:
        return self.shard.snapshot_now()

    def info(self) -> dict[str, Any]:
        s = self.shard.stats
        return {
            "pid": os.getpid(),
            "transactional_id": self.config.transactional_id,
            "aggregates": len(self.shard.entries),
            "rehydrated_events": s.events,
            "rehydrated_snapshots": s.snapshots,
            "rehydration_s": s.seconds,
            "next_offsets": dict(self.shard.next_offset),
        }


RemoteShardActor = ray.remote(ShardActor)


def actor_name(config: ShardConfig) -> str:
    return f"{config.service}-shard-{config.shard}"


def spawn_shard(config: ShardConfig, *, name: str | None = None, detached: bool = False) -> Any:
    """Create (or look up) the named shard actor. I/O bound, so it takes no CPU reservation."""
    return RemoteShardActor.options(
        name=name or actor_name(config),
        namespace=config.namespace,
        get_if_exists=True,
        lifetime="detached" if detached else None,
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=-1,
    ).remote(config)

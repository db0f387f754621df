"""The Ray actor that hosts one Shard. Ray restarts it after a crash; __init__ rehydrates."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

from actors import aggregate_for
from actors.outcomes import Outcome
from actors.shard import Shard, ShardConfig, ShardFenced
from choreography.runtime import actor_options, tune_gc
from events import default_registry
from events.base import Command, DomainModel

log = logging.getLogger("choreo.shard")

DEADLINE_CHECK_S = 0.25


class ShardActor:
    """Serves commands from two doors, one writer behind both: Ray calls (`handle`) and the
    service's command topic (policies), consumed by a background thread."""

    def __init__(self, config: ShardConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        tune_gc()
        self.config = config
        self.shard = Shard(config, aggregate_for(config.service, config.deadline_s), default_registry())
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="commands", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        consumer = self.shard.open_command_stream()
        metadata = consumer.consumer_group_metadata()
        next_check = 0.0
        try:
            while not self.stopping.is_set():
                msgs = consumer.consume(num_messages=self.config.batch_max, timeout=self.config.poll_ms / 1000)
                if msgs:
                    with self.lock:
                        self.shard.process_messages(msgs, metadata)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + DEADLINE_CHECK_S
                    with self.lock:
                        self.shard.fire_deadlines()
        except ShardFenced:
            log.error("%s was fenced; this instance stops consuming", self.config.transactional_id)
        except Exception:
            # Crash-only: Ray restarts the actor; it rehydrates and resumes from committed offsets.
            log.exception("%s command loop failed; exiting", self.config.transactional_id)
            os._exit(1)

    def handle(self, commands: list[Command]) -> list[Outcome]:
        with self.lock:
            return self.shard.handle(commands)

    def state(self, aggregate_id: str) -> tuple[DomainModel, int]:
        with self.lock:
            return self.shard.state(aggregate_id)

    def dump(self) -> dict[str, tuple[DomainModel, int]]:
        """Every aggregate this shard holds, with its version (for audits and tests)."""
        with self.lock:
            return {k: (e.state, e.version) for k, e in self.shard.entries.items()}

    def snapshot_now(self) -> int:
        with self.lock:
            return self.shard.snapshot_now()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        with self.lock:
            self.shard.close()

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
    options = actor_options(name or actor_name(config), config.namespace, detached, max_task_retries=-1)
    return RemoteShardActor.options(**options).remote(config)

"""The snapshot runbook: inspect, drop and rebuild the compacted `<service>-snapshots` topics."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from actors.shard import ShardConfig
from actors.shard_core import CHECKPOINT_KEY, Entry, SnapshotCodec
from choreography.config import Settings
from events.log.kafka_io import consumer_config, producer_config, read_to_end, watermarks
from events.log.topics import events_topic, snapshots_topic

Report = Callable[[str], None]


@dataclass
class PartitionSnapshots:
    """What a shard would load for one partition, read straight from Kafka (read_committed)."""

    partition: int
    shard: int
    checkpoint: int | None = None
    """The checkpoint's next_offset: events before it are covered by the snapshots."""
    checkpoint_at: float | None = None
    events_end: int = 0
    records: int = 0
    """Live snapshot records (latest per aggregate), not counting the checkpoint."""
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    """Why the shard would ignore this partition's snapshots, if it would."""

    @property
    def replay_from(self) -> int:
        """The event offset rehydration starts at: the checkpoint, or 0 when ignored or absent."""
        return 0 if self.corrupt or self.checkpoint is None else self.checkpoint

    @property
    def tail(self) -> int:
        """Event-log records to replay on rehydration (a trailing commit marker counts as one)."""
        return max(0, self.events_end - self.replay_from)

    def age_s(self, now: float | None = None) -> float | None:
        return None if self.checkpoint_at is None else max(0.0, (now or time.time()) - self.checkpoint_at)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "replay_from": self.replay_from, "tail": self.tail, "age_s": self.age_s()}


def check_service(settings: Settings, service: str) -> None:
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")


def check_partitions(settings: Settings, service: str, partitions: list[int] | None) -> list[int]:
    """The partitions to act on (all when None), validated against the service's topic."""
    check_service(settings, service)
    count = settings.partitions(service)
    chosen = sorted(set(partitions or range(count)))
    bad = [p for p in chosen if not 0 <= p < count]
    if bad:
        raise ValueError(f"{service} has partitions 0..{count - 1}; no partition {bad[0]}")
    return chosen


def owner(settings: Settings, service: str, partition: int) -> int:
    return partition % settings.services[service].shards


def status(settings: Settings, service: str, partitions: list[int] | None = None) -> list[PartitionSnapshots]:
    """Per partition: checkpoint offset and time, events end offset, live snapshot records and bytes,
    and whether the shard would ignore the snapshots (undecodable records) and replay from 0."""
    chosen = check_partitions(settings, service, partitions)
    codec = SnapshotCodec(settings.aggregate(service).state_type)
    found = {p: PartitionSnapshots(p, owner(settings, service, p)) for p in chosen}
    sizes: dict[int, dict[bytes, int]] = {p: {} for p in chosen}
    consumer = _consumer(settings)
    try:
        events = settings.topic_name(events_topic(service))
        for p in chosen:
            found[p].events_end = watermarks(consumer, events, p)[1]
        unit: dict[int, dict[bytes, int]] = {p: {} for p in chosen}
        unit_errors: dict[int, list[str]] = {p: [] for p in chosen}
        """The records, and the unreadable ones, of each partition's snapshot up to its checkpoint."""
        for msg in read_to_end(consumer, settings.topic_name(snapshots_topic(service)), dict.fromkeys(chosen, 0)):
            p, key, value = msg.partition() or 0, msg.key() or b"", msg.value()
            snap = found[p]
            try:
                if key == CHECKPOINT_KEY:
                    marker = json.loads(value or b"")
                    snap.checkpoint, snap.checkpoint_at = int(marker["next_offset"]), marker.get("at")
                    if SnapshotCodec.checkpoint_supersedes(value or b""):  # every earlier snapshot is void
                        sizes[p].clear()
                        snap.corrupt.clear()
                    sizes[p].update(unit[p])
                    snap.corrupt += unit_errors[p]
                    unit[p], unit_errors[p] = {}, []
                else:
                    codec.decode(value or b"")
                    unit[p][key] = len(value or b"")
            except (ValueError, KeyError, TypeError) as exc:
                unit_errors[p].append(f"offset {msg.offset()}: {type(exc).__name__}")
        for p, errors in unit_errors.items():
            found[p].corrupt += errors
    finally:
        consumer.close()
    for p, snap in found.items():
        snap.records, snap.bytes = len(sizes[p]), sum(sizes[p].values())
    return [found[p] for p in chosen]


def drop(settings: Settings, service: str, partitions: list[int] | None = None) -> dict[int, int]:
    """Make the shards ignore the snapshots of `partitions` (all when None) and replay them from
    the event log. Returns the number of aggregates reset per partition.

    Per partition, one transaction with the partition's own transactional.id (which fences the
    shard writing it, so it cannot append a partial snapshot after ours) writes the initial state
    at version 0 for every aggregate that has a snapshot, and a checkpoint at offset 0: exactly
    what a shard that never snapshotted would load. Restart the owning shards afterwards
    (`restart_shards`): a fenced instance refuses to write until it is restarted."""
    chosen = check_partitions(settings, service, partitions)
    aggregate = settings.aggregate(service)
    codec = SnapshotCodec(aggregate.state_type)
    topic = settings.topic_name(snapshots_topic(service))
    blank = codec.encode(Entry(aggregate.initial(), 0))
    marker = json.dumps({"next_offset": 0, "at": time.time(), "dropped": True}).encode()
    reset: dict[int, int] = {}
    for p in chosen:
        config = shard_config(settings, service, owner(settings, service, p))
        producer = Producer(producer_config(settings.kafka.client_config(), config.transactional_id(p)))
        producer.init_transactions(60)  # fences the partition's writer and aborts its open transaction
        keys = _snapshot_keys(settings, topic, [p])  # read after fencing: no commit can follow
        producer.begin_transaction()
        for key in sorted(keys[p]):
            producer.produce(topic, key=key, value=blank, partition=p)
        producer.produce(topic, key=CHECKPOINT_KEY, value=marker, partition=p)
        reset[p] = len(keys[p])
        producer.flush(60)
        producer.commit_transaction(60)
    return reset


def shard_config(settings: Settings, service: str, shard: int) -> ShardConfig:
    from choreography.system import shard_config as config_of

    return config_of(settings, service, shard)


def shards_of(settings: Settings, service: str, partitions: list[int] | None = None) -> list[int]:
    chosen = check_partitions(settings, service, partitions)
    return sorted({owner(settings, service, p) for p in chosen})


def running_shards(settings: Settings, service: str, shards: list[int]) -> dict[int, Any]:
    """Handles of the shard actors that run now in the deployment's Ray namespace (Ray must be
    initialised); shards that do not run are left out."""
    import ray

    from actors.shard_actor import shard_actor_name

    found = {}
    for shard in shards:
        try:
            found[shard] = ray.get_actor(shard_actor_name(service, shard), namespace=settings.namespace)
        except ValueError:
            continue
    return found


def restart_shards(handles: dict[int, Any], timeout: float = 300) -> dict[int, dict[str, Any]]:
    """Kill the shard actors and let Ray restart them: each rehydrates from its snapshots and the
    event log. Returns each restarted shard's info() once it serves again."""
    import ray

    before = {n: ray.get(h.info.remote(), timeout=timeout)["pid"] for n, h in handles.items()}
    for handle in handles.values():
        ray.kill(handle, no_restart=False)
    return {n: wait_serving(h, before[n], timeout) for n, h in handles.items()}


def wait_serving(handle: Any, old_pid: int | None, timeout: float = 300) -> dict[str, Any]:
    """Wait until a (restarted) shard actor answers from a new process and has rehydrated."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    deadline = time.monotonic() + timeout
    while True:
        try:
            ready = getattr(handle, "ready", None)  # waits for rehydration where the actor has it
            call = ready.remote(timeout) if ready is not None else handle.info.remote()
            info: dict[str, Any] = ray.get(call, timeout=timeout)
            if info["pid"] != old_pid and info.get("phase") not in ("starting", "rehydrating"):
                return info
        except (RayActorError, GetTimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"shard actor did not serve again within {timeout:.0f}s")
        time.sleep(0.2)


def rebuild(
    settings: Settings, service: str, partitions: list[int] | None = None, report: Report | None = None
) -> list[PartitionSnapshots]:
    """Drop the snapshots of `partitions`, restart their shards so they rehydrate from the event
    log alone, and have each write a complete, fresh snapshot at the end of its log. Shards that
    do not run are started for the rebuild and stopped afterwards. Returns the new status."""
    import ray

    from actors.shard_actor import spawn_shard

    say = report or (lambda _: None)
    shards = shards_of(settings, service, partitions)
    say(f"dropping snapshots of {service} partitions {check_partitions(settings, service, partitions)}")
    drop(settings, service, partitions)
    running = running_shards(settings, service, shards)
    say(f"restarting {service} shards {sorted(running)} (they replay the event log)")
    restart_shards(running)
    temporary = {}
    for shard in sorted(set(shards) - set(running)):
        say(f"{service} shard {shard} is not running: starting it for the rebuild")
        name = f"{service}-shard-{shard}-rebuild-{uuid.uuid4().hex[:6]}"
        temporary[shard] = spawn_shard(shard_config(settings, service, shard), name=name)
        wait_serving(temporary[shard], None)
    try:
        for shard, handle in {**running, **temporary}.items():
            written = ray.get(handle.snapshot_now.remote(), timeout=300)
            say(f"{service} shard {shard} wrote {written} snapshots")
    finally:
        for handle in temporary.values():
            ray.kill(handle, no_restart=True)
    return status(settings, service, partitions)


def _consumer(settings: Settings) -> Consumer:
    group = f"choreo-snapshots-{uuid.uuid4().hex}"
    return Consumer(consumer_config(settings.kafka.client_config(), group, **{"enable.partition.eof": True}))


def _snapshot_keys(settings: Settings, topic: str, partitions: list[int]) -> dict[int, set[bytes]]:
    keys: dict[int, set[bytes]] = {p: set() for p in partitions}
    consumer = _consumer(settings)
    try:
        for msg in read_to_end(consumer, topic, dict.fromkeys(partitions, 0)):
            key = msg.key()
            if key and key != CHECKPOINT_KEY and msg.value() is not None:
                keys[msg.partition() or 0].add(key)
    finally:
        consumer.close()
    return keys


__all__ = [
    "PartitionSnapshots",
    "drop",
    "rebuild",
    "restart_shards",
    "running_shards",
    "shards_of",
    "status",
]

"""Topic names and the aggregate-id -> partition -> shard mapping."""

from __future__ import annotations

import zlib


def events_topic(service: str, prefix: str = "") -> str:
    return f"{prefix}{service}-events"


def commands_topic(service: str, prefix: str = "") -> str:
    return f"{prefix}{service}-commands"


def snapshots_topic(service: str, prefix: str = "") -> str:
    return f"{prefix}{service}-snapshots"


def dedup_topic(service: str, prefix: str = "") -> str:
    return f"{prefix}{service}-dedup"


DLQ_TOPIC = "choreo-dead-letters"


def dlq_topic(prefix: str = "") -> str:
    return f"{prefix}{DLQ_TOPIC}"


OWNERS_TOPIC = "choreo-partition-owners"
"""Compacted, keyed by service: which shard owns each partition (see events.log.owners)."""


def owners_topic(prefix: str = "") -> str:
    return f"{prefix}{OWNERS_TOPIC}"


def shard_group(namespace: str, service: str) -> str:
    """The consumer group of a service's shards on its command topic."""
    return f"{namespace}-{service}-shards"


def policy_group(namespace: str, service: str) -> str:
    """The consumer group of a service's policy runners on the events they react to."""
    return f"{namespace}-policy-{service}"


def projection_group(namespace: str, projection: str) -> str:
    """The consumer group of a projection (informational: ClickHouse holds its positions)."""
    return f"{namespace}-projection-{projection}"


def routes_group(namespace: str) -> str:
    """The group id clients read the partition maps under (they commit nothing)."""
    return f"{namespace}-client-routes"


def partition_for(key: str, partitions: int) -> int:
    """Stable partition of an aggregate id. Producers set it explicitly so routing never drifts."""
    return zlib.crc32(key.encode()) % partitions


def owned_partitions(shard: int, shards: int, partitions: int) -> list[int]:
    """Partitions a shard owns: every `shards`-th one, starting at its index."""
    return list(range(shard, partitions, shards))


def shard_for(key: str, shards: int, partitions: int) -> int:
    return partition_for(key, partitions) % shards

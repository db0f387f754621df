"""Who owns which partition of a service: the partition map that live rescaling changes one
partition at a time. It lives in a compacted topic (one record per service, the latest wins), so
a shard that Ray restarts, and a client that was told its shard moved, both read the current map.
Without a record a service's partitions go round-robin over its shards (`owned_partitions`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from events.log.kafka_io import consumer_config, partitions_of, producer_config, read_to_end
from events.log.topics import owned_partitions


@dataclass(frozen=True)
class PartitionOwners:
    """The owning shard of each partition of one service, and how many shards it runs."""

    shards: int
    owners: tuple[int, ...]
    epoch: int = 0
    """Bumped by every change: a reader keeps the highest it has seen."""

    @classmethod
    def round_robin(cls, shards: int, partitions: int, epoch: int = 0) -> PartitionOwners:
        owners = [0] * partitions
        for shard in range(shards):
            for p in owned_partitions(shard, shards, partitions):
                owners[p] = shard
        return cls(shards, tuple(owners), epoch)

    def owned(self, shard: int) -> list[int]:
        return [p for p, owner in enumerate(self.owners) if owner == shard]

    def moved(self, partition: int, shard: int) -> PartitionOwners:
        owners = list(self.owners)
        owners[partition] = shard
        return PartitionOwners(max(self.shards, shard + 1), tuple(owners), self.epoch + 1)

    def encode(self) -> bytes:
        return json.dumps({"shards": self.shards, "owners": list(self.owners), "epoch": self.epoch}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> PartitionOwners:
        doc = json.loads(raw)
        return cls(int(doc["shards"]), tuple(int(o) for o in doc["owners"]), int(doc["epoch"]))


def owners_of(maps: dict[str, PartitionOwners], service: str, shards: int, partitions: int) -> PartitionOwners:
    """`service`'s partition map among `maps`, or round-robin over `shards` when it has none (or
    one for another partition count, which no shard could serve)."""
    found = maps.get(service)
    if found is None or len(found.owners) != partitions:
        return PartitionOwners.round_robin(shards, partitions)
    return found


class OwnersLog:
    """Reads and writes the partition maps in `topic`, keeping its Kafka clients between calls
    (a client rereads the map whenever a shard says a partition moved)."""

    def __init__(self, kafka: dict[str, str], topic: str, group: str) -> None:
        self.kafka, self.topic, self.group = kafka, topic, group
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    def read(self) -> dict[str, PartitionOwners]:
        """The current partition map of every service that has one (none when the topic is missing)."""
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.kafka, self.group, **{"enable.partition.eof": True}))
        found: dict[str, PartitionOwners] = {}
        for p in partitions_of(self._consumer, self.topic):
            for msg in read_to_end(self._consumer, self.topic, {p: 0}):
                key, value = msg.key(), msg.value()
                if key is None or value is None:
                    continue
                record = PartitionOwners.decode(value)
                if record.epoch >= found.get(key.decode(), record).epoch:
                    found[key.decode()] = record
        return found

    def write(self, service: str, owners: PartitionOwners) -> None:
        """Record `service`'s partition map; returns once the broker has it (acks=all)."""
        if self._producer is None:
            self._producer = Producer(producer_config(self.kafka))
        errors: list[KafkaError] = []
        self._producer.produce(
            self.topic, key=service.encode(), value=owners.encode(), partition=0,
            on_delivery=lambda err, _msg: errors.append(err) if err is not None else None,
        )  # fmt: skip
        if self._producer.flush(30):
            raise TimeoutError(f"the partition map of {service} was not written to {self.topic} within 30s")
        if errors:
            raise KafkaException(errors[0])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None


def read_owners(kafka: dict[str, str], topic: str, group: str) -> dict[str, PartitionOwners]:
    """The current partition maps, read once."""
    log = OwnersLog(kafka, topic, group)
    try:
        return log.read()
    finally:
        log.close()

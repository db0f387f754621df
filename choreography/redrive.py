"""Redrive: run the consumer stage that gave up on a dead letter again, on the parked message,
decided afresh as of now. Nothing is ever appended to an event store topic.

* `policy <service>-<i>`: decode the parked event, run the service's policies and produce the
  commands to their command topics, in one transaction (transactional.id `<prefix>choreo-redrive`)
  with the letter's done mark.
* `shard <transactional id>`: decode the parked command and decide it in the owning shard, the
  single writer, through its normal transaction path; the done mark commits with the decision.
* `projection <name>`: project the parked event again; each table gets its rows only if none of
  its rows holds the event's (topic, partition, offset). The done mark is written after the insert.

A done mark is a record keyed `<dlq partition>:<dlq offset>` in the compacted `choreo-redriven`
topic; letters with a mark are skipped, so redriving twice has no second effect. A message that
fails again is dead-lettered again with the new error (a new letter, redrivable later) and its old
letter is marked done, so each redrive run tries every open letter exactly once."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer

from actors.aggregate import benign_rejections
from actors.outcomes import Accepted, Rejected
from choreography.config import Settings
from choreography.policies import run_policies
from events.base import Command
from events.log.dlq import DeadLetter, LetterMessage, dead_letter_from, send_dead_letter
from events.log.kafka_io import consumer_config, partitions_of, producer_config, read_to_end
from events.log.owners import PartitionOwners, owners_of, read_owners
from events.log.topics import DLQ_TOPIC, OWNERS_TOPIC, commands_topic, partition_for, routes_group

REDRIVEN_TOPIC = "choreo-redriven"
KINDS = ("policy", "shard", "projection")

ShardLookup = Callable[[str, str], Any]
"""(service, aggregate id) -> the shard actor that owns it."""
HostLookup = Callable[[str], Any]
"""projection name -> the projection host actor running it."""


@dataclass(frozen=True)
class Redriven:
    """What happened to one letter: `done` (the stage took it), `parked again` (it failed again
    and was dead-lettered with the new error), `skipped` (marked done before) or `failed` (the
    stage could not be reached; not marked, a later redrive tries again)."""

    letter: DeadLetter
    result: str
    detail: str


def redriven_topic(settings: Settings) -> str:
    try:
        settings.topic(REDRIVEN_TOPIC)
    except KeyError:
        raise ValueError(f"topic '{REDRIVEN_TOPIC}' (redrive done marks) is not declared in the cluster file") from None
    return settings.topic_name(REDRIVEN_TOPIC)


def done_marks(settings: Settings) -> dict[str, dict[str, Any]]:
    """Letter id -> its done mark, read (committed only) from the done-mark topic."""
    topic = redriven_topic(settings)
    consumer = Consumer(
        consumer_config(settings.kafka.client_config(), f"redriven-reader-{uuid.uuid4().hex}",
                        **{"enable.partition.eof": True})
    )  # fmt: skip
    marks: dict[str, dict[str, Any]] = {}
    try:
        for msg in read_to_end(consumer, topic, dict.fromkeys(partitions_of(consumer, topic), 0)):
            if msg.value() is not None:
                marks[(msg.key() or b"").decode()] = json.loads(msg.value() or b"{}")
        return marks
    finally:
        consumer.close()


def select(
    letters: Sequence[DeadLetter], *, all_: bool = False, offsets: Iterable[int] = (), stages: Iterable[str] = ()
) -> list[DeadLetter]:
    """The letters to redrive: all of them or those at the given DLQ offsets, then only those of
    the given stages (a kind such as `policy`, or a whole stage such as `projection orders`)."""
    wanted = set(offsets)
    if all_ and wanted:
        raise ValueError("pass either --all or DLQ offsets, not both")
    if not all_ and not wanted:
        raise ValueError("name the DLQ offsets to redrive, or pass --all")
    chosen = list(letters) if all_ else [lt for lt in letters if lt.dlq_offset in wanted]
    missing = wanted - {lt.dlq_offset for lt in chosen}
    if missing:
        raise ValueError(f"no dead letters at offsets {sorted(missing)}")
    stage_filter = list(stages)
    for stage in stage_filter:
        if stage not in KINDS and " " not in stage:
            known = ", ".join(KINDS)
            raise ValueError(f"unknown stage {stage!r}; use {known} or a whole stage like 'projection orders'")
    if stage_filter:
        chosen = [lt for lt in chosen if lt.kind in stage_filter or lt.stage in stage_filter]
    return chosen


class Redriver:
    """Redrives letters against a running deployment's shards and projection hosts."""

    def __init__(self, settings: Settings, shards: ShardLookup, hosts: HostLookup) -> None:
        self.settings = settings
        self.shards = shards
        self.hosts = hosts
        self.registry = settings.registry()
        self.marks_topic = redriven_topic(settings)
        self.dlq_topic = settings.topic_name(DLQ_TOPIC)
        self._producer: Producer | None = None

    @property
    def producer(self) -> Producer:
        """Transactional, with a stable id: a second redrive run fences the first."""
        if self._producer is None:
            tid = f"{self.settings.topic_prefix}choreo-redrive"
            self._producer = Producer(producer_config(self.settings.kafka.client_config(), tid))
            self._producer.init_transactions(60)
        return self._producer

    def run(self, letters: Sequence[DeadLetter]) -> list[Redriven]:
        import ray

        marks = done_marks(self.settings)
        results = []
        for letter in letters:
            if letter.letter_id in marks:
                mark = marks[letter.letter_id]
                results.append(Redriven(letter, "skipped", f"redriven before: {mark.get('result', 'done')}"))
                continue
            try:
                results.append(self.redrive(letter))
            except ray.exceptions.RayTaskError as exc:
                results.append(Redriven(letter, "failed", f"{type(exc.cause).__name__}: {exc.cause}"))
            except Exception as exc:  # the stage is unreachable: not marked, a later run retries
                results.append(Redriven(letter, "failed", f"{type(exc).__name__}: {exc}"))
        return results

    def redrive(self, letter: DeadLetter) -> Redriven:
        if letter.kind == "policy":
            return self._policy(letter)
        if letter.kind == "shard":
            return self._shard(letter)
        if letter.kind == "projection":
            return self._projection(letter)
        return Redriven(letter, "failed", f"unknown stage {letter.stage!r}")

    # ---- the stages ----------------------------------------------------------------

    def _policy(self, letter: DeadLetter) -> Redriven:
        service = letter.stage_target.rsplit("-", 1)[0]
        if service not in self.settings.services or not self.settings.services[service].policies:
            return Redriven(letter, "failed", f"no policies of service {service!r}")
        try:
            stored = self.registry.decode_event(letter.value, letter.source_topic, letter.partition, letter.offset)
            commands = run_policies(self.settings.wiring(service), stored, services=self.settings.services)
        except Exception as exc:
            return self._park_again(letter, _error(exc))
        producer = self.producer
        producer.begin_transaction()
        for cmd in commands:
            target = cmd.target
            producer.produce(
                commands_topic(target, self.settings.topic_prefix),
                key=cmd.aggregate_id.encode(),
                value=self.registry.encode_command(cmd),
                partition=partition_for(cmd.aggregate_id, self.settings.partitions(target)),
            )
        detail = ", ".join(f"{type(c).__name__} -> {c.target}" for c in commands) or "no commands"
        self._produce_mark(producer, letter, "done", detail)
        producer.commit_transaction(60)
        return Redriven(letter, "done", detail)

    def _shard(self, letter: DeadLetter) -> Redriven:
        import ray

        try:
            command: Command = self.registry.decode_command(letter.value)
        except Exception as exc:
            return self._park_again(letter, _error(exc))
        actor = self.shards(command.target, command.aggregate_id)
        marks = [self._mark(letter, "decided", f"{type(command).__name__} decided in its shard")]
        outcome = ray.get(actor.redrive.remote(command, letter, marks), timeout=120)
        if isinstance(outcome, Accepted):
            if outcome.duplicate:
                return Redriven(letter, "done", f"{type(command).__name__} had been decided already (no effect)")
            return Redriven(letter, "done", f"{type(command).__name__} accepted: {len(outcome.events)} event(s)")
        assert isinstance(outcome, Rejected)
        rejected = f"{type(command).__name__} rejected {outcome.code}: {outcome.reason}"
        if outcome.code in benign_rejections(self.settings.aggregate(command.target)):
            return Redriven(letter, "done", f"{rejected} (benign, no effect)")
        return Redriven(letter, "parked again", rejected)

    def _projection(self, letter: DeadLetter) -> Redriven:
        import ray

        name = letter.stage_target
        if name not in self.settings.projections:
            return Redriven(letter, "failed", f"no projection {name!r} in the cluster file")
        host = self.hosts(name)
        answer = ray.get(
            host.redrive.remote(name, letter.source_topic, letter.partition, letter.offset, letter.value), timeout=120
        )
        if answer.get("pending"):
            return Redriven(letter, "failed", f"not consumed by the projection yet ({answer['pending']}); try later")
        if answer["error"]:
            return self._park_again(letter, answer["error"])
        parts = []
        if answer["inserted"]:
            parts.append(f"inserted into {', '.join(answer['inserted'])}")
        if answer["present"]:
            parts.append(f"already in {', '.join(answer['present'])}")
        detail = "; ".join(parts) or "no rows"
        self._commit_mark(letter, "done", detail)
        return Redriven(letter, "done", detail)

    # ---- marks and re-parking --------------------------------------------------------

    def _mark(self, letter: DeadLetter, result: str, detail: str) -> tuple[str, bytes, bytes]:
        """(topic, key, value) of the letter's done mark."""
        value: dict[str, Any] = {"letter": letter.letter_id, "stage": letter.stage, "result": result}
        value |= {"detail": detail, "at": time.time()}
        return self.marks_topic, letter.letter_id.encode(), json.dumps(value).encode()

    def _produce_mark(self, producer: Producer, letter: DeadLetter, result: str, detail: str) -> None:
        topic, key, value = self._mark(letter, result, detail)
        producer.produce(topic, key=key, value=value)

    def _commit_mark(self, letter: DeadLetter, result: str, detail: str) -> None:
        producer = self.producer
        producer.begin_transaction()
        self._produce_mark(producer, letter, result, detail)
        producer.commit_transaction(60)

    def _park_again(self, letter: DeadLetter, error: str) -> Redriven:
        """The message failed again: a new dead letter with the new error, and the old one marked
        done, in one transaction."""
        producer = self.producer
        producer.begin_transaction()
        send_dead_letter(producer, self.dlq_topic, dead_letter_from(LetterMessage(letter), letter.stage, error))
        self._produce_mark(producer, letter, "parked again", error)
        producer.commit_transaction(60)
        return Redriven(letter, "parked again", error)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


class Deployment:
    """The running deployment's shard actors and projection hosts, looked up by name in the Ray
    namespace. One that is not running is started for the redrive and stopped by `close()`;
    running ones are left alone."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started: list[Any] = []
        self.owners: dict[str, PartitionOwners] = {}

    def shard(self, service: str, aggregate_id: str) -> Any:
        from actors.shard_actor import actor_name, spawn_shard
        from choreography.rescale import scaled_settings
        from choreography.system import shard_config

        if service not in self.settings.services:
            raise ValueError(f"no service {service!r} in the cluster file")
        if service not in self.owners:  # the shards a rescale left, where the map puts them
            s = self.settings
            maps = read_owners(s.kafka.client_config(), s.topic_name(OWNERS_TOPIC), routes_group(s.namespace))
            self.owners[service] = owners_of(maps, service, s.services[service].shards, s.partitions(service))
        owners = self.owners[service]
        idx = owners.owners[partition_for(aggregate_id, self.settings.partitions(service))]
        config = shard_config(scaled_settings(self.settings, service, owners.shards), service, idx)
        return self._get(actor_name(config), lambda: spawn_shard(config))

    def host(self, projection: str) -> Any:
        from projections.host import spawn_projection_hosts

        s = self.settings
        embedded = s.clickhouse.dsn.startswith("chdb://")
        chosen = s.projections if embedded else {projection: s.projections[projection]}

        def spawn() -> Any:
            hosts = spawn_projection_hosts(
                s.clickhouse.dsn, s.kafka.client_config(), s.namespace, s.topic_prefix,
                {n: p.model_dump() for n, p in chosen.items()}, s.messages_paths(), python_path=s.python_path,
            )  # fmt: skip
            return hosts[projection]

        return self._get("projection-host" if embedded else f"projection-{projection}", spawn)

    def _get(self, name: str, spawn: Callable[[], Any]) -> Any:
        import ray

        try:
            return ray.get_actor(name, namespace=self.settings.namespace)
        except ValueError:
            actor = spawn()
            self.started.append(actor)
            return actor

    def close(self) -> None:
        import ray

        for actor in self.started:
            with contextlib.suppress(Exception):  # best effort: it is killed next
                ray.get(actor.stop.remote(), timeout=30)
            ray.kill(actor, no_restart=True)
        self.started.clear()

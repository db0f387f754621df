"""`System.stuck`: the sagas of a running system that have not reached their end, each with the
service that owes the next step and what that step waits on.

The saga's events come from the `events_raw` projection; `choreography.stuck` decides, from the
declared wiring and aggregates, which steps are owed. Each owed step is then explained from Kafka
and Ray: the owing service's policy stage has not consumed the event (lag), the event or the
command was dead-lettered, the target shard has not consumed the command (lag), or that shard does
not answer (a failed shard). A step with none of these was taken and made no event (its command
was rejected as a no-op): it is settled, and a saga whose only owed steps are settled and whose
root reached a terminal state is not stuck."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from choreography.stuck import OwedStep, StuckSaga, open_saga
from choreography.traces import Trace, build_trace
from events.base import Envelope, StoredEvent
from events.log.dlq import DeadLetter
from events.log.topics import commands_topic, partition_for, policy_group, shard_group
from projections.events_raw import EVENTS_RAW

if TYPE_CHECKING:
    from choreography.system import System

SCAN_CHUNK = 1_000


def require_events_raw(system: System, what: str) -> None:
    settings = system.settings
    if not any(t.name == EVENTS_RAW.name for name in settings.projections for t in settings.projection(name).tables):
        raise ValueError(f"{what} reads the events_raw projection: declare it under metadata.projections")


def saga_events(system: System, ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
    """The events of each saga in `ids` (from events_raw), in the order they happened."""
    registry = system.settings.registry()
    columns = ", ".join((*EVENTS_RAW.columns, "_topic", "_partition", "_offset"))
    fields = set(Envelope.model_fields)
    by_saga: dict[str, list[StoredEvent]] = {}
    for start in range(0, len(ids), SCAN_CHUNK):
        rows = system.query(
            f"SELECT {columns} FROM events_raw WHERE correlation_id IN %(ids)s "
            "ORDER BY correlation_id, occurred_at, _topic, _partition, _offset",
            {"ids": list(ids[start : start + SCAN_CHUNK])},
        ).as_dicts()
        for row in rows:
            cls = registry.event_class(row["event_type"])
            envelope = Envelope(**{c: row[c] for c in fields} | {"occurred_at": _aware(row["occurred_at"])})
            event = StoredEvent(
                envelope, cls.model_validate_json(row["payload"]), row["_topic"], row["_partition"], row["_offset"],
                round(_aware(row["kafka_timestamp"]).timestamp() * 1000),
            )  # fmt: skip
            by_saga.setdefault(row["correlation_id"], []).append(event)
    return by_saga


def find_stuck(system: System, older_than_s: float, limit: int, scan: int) -> list[StuckSaga]:
    """Up to `limit` open sagas whose last event is at least `older_than_s` old, among the `scan`
    most recently active such sagas, most recent first."""
    require_events_raw(system, "finding stuck sagas")
    settings = system.settings
    aggregates = {s: settings.aggregate(s) for s in settings.services}
    wiring = {s: settings.wiring(s) for s in settings.services}
    now = datetime.now(UTC)
    before = (now - timedelta(seconds=older_than_s)).replace(tzinfo=None)
    ids = [
        str(saga)
        for (saga,) in system.query(
            "SELECT correlation_id FROM events_raw GROUP BY correlation_id HAVING max(occurred_at) <= %(before)s "
            "ORDER BY max(occurred_at) DESC LIMIT %(scan)s",
            {"before": before, "scan": scan},
        ).rows
    ]
    by_saga = saga_events(system, ids)
    found = [
        saga
        for saga_id in ids
        if (saga := open_saga(saga_id, by_saga.get(saga_id, []), aggregates, wiring, now)) is not None
    ]
    return Waits(system).explain(found)[:limit]


def find_trace(system: System, saga_id: str) -> Trace:
    """The derived trace of one saga (see choreography/traces.py), from its events in events_raw."""
    require_events_raw(system, "tracing a saga")
    settings = system.settings
    wiring = {s: settings.wiring(s) for s in settings.services}
    return build_trace(saga_id, saga_events(system, [saga_id]).get(saga_id, []), wiring)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Waits:
    """What owed steps wait on, from the consumer groups' offsets, the dead letters and the shards."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.settings = system.settings
        self.offsets = {(r.group, r.topic, r.partition): (r.committed, r.end) for r in system.lag()}
        self.letters: list[DeadLetter] = system.dead_letters()
        self.answers: dict[tuple[str, int], str] = {}

    def explain(self, sagas: Sequence[StuckSaga]) -> list[StuckSaga]:
        kept: list[StuckSaga] = []
        for saga in sagas:
            waits = [(step, self.wait_of(step)) for step in saga.owed]
            saga.owed = [step for step, wait in waits if wait is not None]
            saga.waiting_on = [wait for _, wait in waits if wait is not None]
            if saga.owed or saga.root_terminal is False:
                kept.append(saga)
        return kept

    def wait_of(self, step: OwedStep) -> str | None:
        """What the step waits on, or None when it was taken (its commands made no event)."""
        s, cause = self.settings, step.cause
        at = f"{cause.topic}[{cause.partition}]@{cause.offset}"
        letter = self._letter_at(cause.topic, cause.partition, cause.offset)
        if letter is not None:
            return f"dead letter {letter.letter_id} from {letter.stage}: {letter.error}"
        if step.error:
            return f"the policy raises on {at}: {step.error}"
        committed, end = self.offsets.get(
            (policy_group(s.namespace, step.service), cause.topic, cause.partition), (-1, 0)
        )
        if committed <= cause.offset:
            runners = len(self.system.policy_runners.get(step.service, []))
            note = "" if runners else f"; {step.service} runs no policy runner"
            return (
                f"lag: {step.service}'s policy stage has not consumed {at} "
                f"(committed offset {max(committed, 0)}, {end - max(committed, 0)} events to go{note})"
            )
        for command in step.commands:
            letter = self._letter_of(command.command_id)
            if letter is not None:
                return f"dead letter {letter.letter_id} from {letter.stage}: {letter.error}"
            target = command.target
            p = partition_for(command.aggregate_id, s.partitions(target))
            topic = s.topic_name(commands_topic(target))
            done, end = self.offsets.get((shard_group(s.namespace, target), topic, p), (-1, 0))
            if done < end:
                failed = self._failed_shard(target, p)
                if failed:
                    return failed
                return f"lag: {target}'s shard has {end - max(done, 0)} commands to go on {topic}[{p}]"
        return None

    def _letter_at(self, topic: str, partition: int, offset: int) -> DeadLetter | None:
        """The dead letter of the message at this position."""
        return next(
            (d for d in self.letters if (d.source_topic, d.partition, d.offset) == (topic, partition, offset)), None
        )

    def _letter_of(self, command_id: str) -> DeadLetter | None:
        """A dead letter holding this command."""
        wanted = command_id.encode()
        return next((d for d in self.letters if d.value is not None and wanted in d.value), None)

    def _failed_shard(self, service: str, partition: int) -> str:
        """Why the shard owning the partition does not answer, or "" when it does."""
        key = (service, partition)
        if key not in self.answers:
            owners = self.system.owners[service].owners
            index = owners[partition]
            try:
                ray.get(self.system.shards[service][index].info.remote(), timeout=5)
                self.answers[key] = ""
            except (GetTimeoutError, RayActorError) as exc:
                self.answers[key] = f"failed shard {service}-{index}: {type(exc).__name__}"
        return self.answers[key]

"""A test kit for your own services, with no Kafka, no Ray and no test framework needed.

* `given(aggregate, *history).when(command).then(*events)` / `.then_rejected(code)`: one
  aggregate's decisions (in the spirit of Akka's EventSourcedBehaviorTestKit);
* `reactions(wiring, event)`: the commands a service's policies send for one event;
* `InMemoryChoreography`: aggregates and wiring tables run together through an in-memory bus,
  with the shards' command-id dedup, envelopes with correlation and causation ids, and commands
  taken in any order you like (pass a seeded `random.Random` to shuffle them);
* `InMemoryProjection`: a projection fed events in batches, its rows kept per table.

Failures raise AssertionError with what was expected and what happened, so the kit works under
pytest, unittest or a plain script."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from actors.aggregate import Aggregate, DomainError, fold
from choreography.policies import On, run_policies
from events.base import Command, DomainModel, Envelope, Event, StoredEvent
from projections.base import Projection

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class Scenario:
    """An aggregate after `history`, about to decide one command."""

    def __init__(self, aggregate: Aggregate[Any], history: Sequence[Event]) -> None:
        self.aggregate = aggregate
        self.state = fold(aggregate, history)
        self.command: Command | None = None

    def when(self, command: Command) -> Scenario:
        self.command = command
        return self

    def _decide(self) -> list[Event]:
        if self.command is None:
            raise AssertionError("call .when(command) first")
        return self.aggregate.decide(self.state, self.command)

    def then(self, *expected: Event) -> Any:
        """Assert the command produces exactly `expected`; returns the state after them."""
        try:
            events = self._decide()
        except DomainError as err:
            raise AssertionError(
                f"expected {list(expected)}, but the command was rejected: {err.code}: {err}"
            ) from None
        if events != list(expected):
            raise AssertionError(f"expected events {list(expected)}\n     got events {events}")
        return fold(self.aggregate, events, self.state)

    def then_rejected(self, code: str, match: str | None = None) -> DomainError:
        """Assert the command is rejected with `code` (and a message containing `match`)."""
        try:
            events = self._decide()
        except DomainError as err:
            if err.code != code:
                raise AssertionError(f"expected rejection {code!r}, got {err.code!r}: {err}") from None
            if match is not None and match not in str(err):
                raise AssertionError(f"rejection message {str(err)!r} does not contain {match!r}") from None
            return err
        raise AssertionError(f"expected rejection {code!r}, but the command produced {events}")


def given(aggregate: Aggregate[Any], *history: Event) -> Scenario:
    return Scenario(aggregate, list(history))


def stored(
    event: Event, aggregate_id: str = "a-1", *, version: int = 1, event_id: str = "e-1", correlation_id: str = "saga-1"
) -> StoredEvent:
    """`event` as it would sit in the log, for feeding policies and projections by hand."""
    envelope = Envelope(
        event_id=event_id, event_type=event.type_name(), aggregate_type=event.aggregate_type,
        aggregate_id=aggregate_id, version=version, occurred_at=EPOCH, correlation_id=correlation_id,
        causation_id=correlation_id,
    )  # fmt: skip
    return StoredEvent(envelope, event, f"{event.aggregate_type}-events", 0, 0)


def reactions(wiring: Sequence[On], event: Event | StoredEvent, **envelope: Any) -> list[Command]:
    """The commands a wiring table sends for one event (a bare event is wrapped by `stored`)."""
    return run_policies(wiring, event if isinstance(event, StoredEvent) else stored(event, **envelope))


class InMemoryChoreography:
    """Services (aggregate + wiring table, keyed by service name) running through an in-memory
    bus: what the shards and policy runners do, minus Kafka and Ray."""

    def __init__(
        self,
        aggregates: Mapping[str, Aggregate[Any]],
        wiring: Mapping[str, Sequence[On]],
        rng: random.Random | None = None,
    ) -> None:
        unknown = set(wiring) - set(aggregates)
        if unknown:
            raise ValueError(f"wiring for services without an aggregate: {sorted(unknown)}")
        self.aggregates = dict(aggregates)
        self.wiring = {service: list(wiring.get(service, ())) for service in aggregates}
        self.rng = rng
        self.states: dict[tuple[str, str], DomainModel] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.queue: list[Command] = []
        self.seen: set[tuple[str, str]] = set()
        """(service, command id): each service deduplicates its own commands, as its shards do."""
        self.handled: list[Command] = []
        self.rejections: list[tuple[Command, str]] = []
        self.log: list[StoredEvent] = []

    def send(self, *commands: Command) -> InMemoryChoreography:
        for command in commands:
            if command.target not in self.aggregates:
                raise ValueError(f"{type(command).__name__} targets undeclared service {command.target!r}")
        self.queue.extend(commands)
        return self

    def state(self, service: str, aggregate_id: str) -> Any:
        return self.states.get((service, aggregate_id)) or self.aggregates[service].initial()

    def step(self) -> None:
        """Decide one waiting command (the first, or a random one with `rng`)."""
        command = self.queue.pop(self.rng.randrange(len(self.queue)) if self.rng else 0)
        service, aggregate_id = command.target, command.aggregate_id
        if (service, command.command_id) in self.seen:
            return
        self.seen.add((service, command.command_id))
        self.handled.append(command)
        aggregate, key = self.aggregates[service], (service, aggregate_id)
        state = self.state(service, aggregate_id)
        try:
            events = aggregate.decide(state, command)
        except DomainError as err:
            self.rejections.append((command, err.code))
            return
        for event in events:
            state = aggregate.evolve(state, event)
            self.versions[key] = self.versions.get(key, 0) + 1
            envelope = Envelope(
                event_id=f"ev{len(self.log)}", event_type=event.type_name(), aggregate_type=service,
                aggregate_id=aggregate_id, version=self.versions[key], occurred_at=EPOCH,
                correlation_id=command.correlation_id or aggregate_id, causation_id=command.command_id,
            )  # fmt: skip
            record = StoredEvent(envelope, event, f"{service}-events", 0, len(self.log))
            self.log.append(record)
            for rows in self.wiring.values():
                self.send(*run_policies(rows, record))
        self.states[key] = state

    def run(self, limit: int = 100_000) -> InMemoryChoreography:
        """Decide waiting commands until none is left; AssertionError if they never run out."""
        for _ in range(limit):
            if not self.queue:
                return self
            self.step()
        raise AssertionError(f"the choreography did not settle within {limit} commands")

    def event_types(self, correlation_id: str) -> list[str]:
        """The saga's events, in the order they were stored."""
        return [s.envelope.event_type for s in self.log if s.envelope.correlation_id == correlation_id]


class InMemoryProjection:
    """A projection fed events in batches (as its runner would), its rows kept per table as
    dicts of column -> value. Like its runner it sees only the events of its topics (`topics`,
    default the projection's own; the in-memory log names them `<service>-events`). Lookups of
    rows from earlier batches go through the projection's own cache only, so feed one instance
    from the start of the log."""

    def __init__(self, projection: Projection, topics: Sequence[str] | None = None) -> None:
        self.projection = projection
        self.topics = set(projection.topics if topics is None else topics)
        self.tables = {table.name: table for table in projection.tables}
        self._rows: dict[str, list[dict[str, Any]]] = {name: [] for name in self.tables}

    def feed(self, events: Iterable[StoredEvent], batch_size: int = 1000) -> InMemoryProjection:
        batch: list[StoredEvent] = []
        for event in events:
            if event.topic not in self.topics:
                continue
            batch.append(event)
            if len(batch) >= batch_size:
                self._project(batch)
                batch = []
        if batch:
            self._project(batch)
        return self

    def _project(self, batch: list[StoredEvent]) -> None:
        for name, rows in self.projection.project(batch, lambda sql, params: []).items():
            columns = (*self.tables[name].columns, "_topic", "_partition", "_offset")
            self._rows[name].extend(dict(zip(columns, row, strict=True)) for row in rows)

    def rows(self, table: str) -> list[dict[str, Any]]:
        return list(self._rows[table])

    def latest(self, table: str, key: str) -> dict[Any, dict[str, Any]]:
        """The last row per `key` value, as a ReplacingMergeTree read with FINAL would show."""
        return {row[key]: row for row in self._rows[table]}

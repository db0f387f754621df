"""Which sagas have not reached their end, and which service owes the next step. Pure: it reads a
saga's events and the declared wiring and aggregates, and asks nothing of Kafka or Ray. The
system adds what an owed step waits on (see `choreography.system.System.stuck`).

A saga's root is the aggregate of its first event. The saga is open while its root is not in a
terminal state (the aggregate implements `HasTerminalStates`), or while a policy owes a step: a
wiring row reacts to one of its events with commands none of whose events exist yet (a policy's
command ids derive from the event id, and the events a command makes carry its id as causation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from actors.aggregate import Aggregate, HasDeadlines, HasTerminalStates
from choreography.policies import On, reactions
from events.base import Command, StoredEvent


@dataclass(frozen=True)
class OwedStep:
    """`service`'s `policy` reacts to `cause` with `commands`, and none of their events exist."""

    service: str
    policy: str
    cause: StoredEvent
    commands: tuple[Command, ...]
    error: str = ""
    """Set when the policy raises on the event (its runner dead-letters it)."""

    def describe(self) -> str:
        made = ", ".join(sorted({type(c).__name__ for c in self.commands})) or "?"
        return f"{self.service}: {self.policy} on {self.cause.envelope.event_type} -> {made}"


@dataclass
class StuckSaga:
    saga_id: str
    root: tuple[str, str]
    """(service, aggregate id) of the saga's first event."""
    root_terminal: bool | None
    """None when the root aggregate does not say which states are terminal."""
    last: StoredEvent
    age_s: float
    owed: list[OwedStep]
    deadline: datetime | None = None
    """When the root aggregate expires, if it has a deadline and is waiting for it."""
    waiting_on: list[str] = field(default_factory=list)
    """Filled by the system: per owed step, what it waits on (lag, a dead letter, a failed shard)."""

    @property
    def owner(self) -> str:
        """The service that owes the next step: the latest owed policy's, else the root's own."""
        return self.owed[-1].service if self.owed else self.root[0]

    @property
    def next_step(self) -> str:
        if self.owed:
            return self.owed[-1].describe()
        if self.deadline is not None:
            return f"{self.root[0]}: its deadline at {self.deadline.isoformat(timespec='seconds')}"
        return f"{self.root[0]}: a command to {self.root[0]} {self.root[1]}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "saga_id": self.saga_id,
            "root": f"{self.root[0]} {self.root[1]}",
            "root_terminal": self.root_terminal,
            "last_event": self.last.envelope.event_type,
            "last_service": self.last.envelope.aggregate_type,
            "last_at": self.last.envelope.occurred_at.isoformat(),
            "age_s": round(self.age_s, 1),
            "owner": self.owner,
            "next_step": self.next_step,
            "owed": [s.describe() for s in self.owed],
            "waiting_on": list(self.waiting_on),
        }


def owed_steps(events: Sequence[StoredEvent], wiring: Mapping[str, Sequence[On]]) -> list[OwedStep]:
    """The reactions to `events` whose commands made no event among `events`, oldest cause first."""
    effected = {e.envelope.causation_id for e in events}
    owed: list[OwedStep] = []
    for event in events:
        for service, rows in wiring.items():
            for made in reactions(rows, event):
                if made.error:
                    owed.append(OwedStep(service, made.policy, event, (), made.error))
                elif made.commands and not any(c.command_id in effected for c in made.commands):
                    owed.append(OwedStep(service, made.policy, event, made.commands))
    return owed


def open_saga(
    saga_id: str,
    events: Sequence[StoredEvent],
    aggregates: Mapping[str, Aggregate[Any]],
    wiring: Mapping[str, Sequence[On]],
    now: datetime,
) -> StuckSaga | None:
    """The saga as a StuckSaga if it has not reached its end, else None. `events` in the order
    they happened (by time, then log position)."""
    if not events:
        return None
    first, last = events[0], events[-1]
    root = (first.envelope.aggregate_type, first.envelope.aggregate_id)
    terminal, deadline = _root_state(root, events, aggregates.get(root[0]))
    owed = owed_steps(events, wiring)
    if terminal is not False and not owed:
        return None
    age = (now - last.envelope.occurred_at).total_seconds()
    return StuckSaga(saga_id, root, terminal, last, age, owed, deadline)


def _root_state(
    root: tuple[str, str], events: Sequence[StoredEvent], aggregate: Aggregate[Any] | None
) -> tuple[bool | None, datetime | None]:
    """(is terminal, deadline) of the root aggregate folded from the saga's events; (None, None)
    when the aggregate cannot tell or its history is not all in the saga."""
    if aggregate is None or not isinstance(aggregate, HasTerminalStates):
        return None, None
    mine = sorted(
        (e for e in events if (e.envelope.aggregate_type, e.envelope.aggregate_id) == root),
        key=lambda e: e.envelope.version,
    )
    if [e.envelope.version for e in mine] != list(range(1, len(mine) + 1)):
        return None, None
    state = aggregate.initial()
    for e in mine:
        state = aggregate.evolve(state, e.payload)
    terminal = bool(aggregate.is_terminal(state))
    deadline = aggregate.due_at(state) if isinstance(aggregate, HasDeadlines) and not terminal else None
    return terminal, deadline

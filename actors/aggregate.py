"""The aggregate contract: decide(state, command) -> events, evolve(state, event) -> state.

An aggregate imports neither Ray nor Kafka. Beyond the three required methods it may implement
optional protocols, checked with isinstance at bootstrap:

* `HasDeadlines`: the shard expires an aggregate whose deadline passed (`deadline_s` in cluster.yaml);
* `HasTerminalStates`: tells which states end the aggregate's part in its saga;
* `HasBenignRejections`: rejection codes that are harmless no-ops for commands sent by policies.

The saga id is the correlation id: a client command starts a saga whose id is its
`correlation_id` (by default its aggregate id); every event and every command a policy makes in
reaction carries it on."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from events.base import Command, DomainModel, Event

S = TypeVar("S", bound=DomainModel)
S_contra = TypeVar("S_contra", bound=DomainModel, contravariant=True)


class DomainError(Exception):
    """A command breaks a business rule. `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@runtime_checkable
class Aggregate(Protocol[S]):
    """One aggregate type: the service's state machine. `aggregate_type` is the service name."""

    aggregate_type: str
    state_type: type[S]

    def initial(self) -> S: ...

    def decide(self, state: S, command: Command) -> list[Event]:
        """The events `command` produces from `state`; raise DomainError to reject it."""
        ...

    def evolve(self, state: S, event: Event) -> S: ...


@runtime_checkable
class HasDeadlines(Protocol[S_contra]):
    """An aggregate whose instances expire: the shard keeps a deadline heap and, once `due_at`
    passes, decides `expire(aggregate_id)` against the current state (exactly once)."""

    def due_at(self, state: S_contra) -> datetime | None:
        """When the aggregate in `state` expires; None when it never will (e.g. it ended)."""
        ...

    def expire(self, aggregate_id: str) -> Command:
        """The command that expires the aggregate; its id must derive from the aggregate id."""
        ...


@runtime_checkable
class HasTerminalStates(Protocol[S_contra]):
    """Which states end the aggregate's part in its saga (passivation and "stuck saga" reports
    rely on it)."""

    def is_terminal(self, state: S_contra) -> bool: ...


@runtime_checkable
class HasBenignRejections(Protocol):
    """Rejection codes that are harmless no-ops when a command from another service's policy
    meets them. Every other rejection of such a command is dead-lettered with its reason."""

    benign_rejections: frozenset[str]


def fold(aggregate: Aggregate[S], events: Iterable[Event], state: S | None = None) -> S:
    """The state after `events`, starting from `state` (by default the aggregate's initial state)."""
    current = aggregate.initial() if state is None else state
    for event in events:
        current = aggregate.evolve(current, event)
    return current


def benign_rejections(aggregate: Aggregate[Any]) -> frozenset[str]:
    return aggregate.benign_rejections if isinstance(aggregate, HasBenignRejections) else frozenset()


def is_terminal(aggregate: Aggregate[Any], state: DomainModel) -> bool | None:
    """Whether `state` is terminal, or None when the aggregate does not say."""
    return aggregate.is_terminal(state) if isinstance(aggregate, HasTerminalStates) else None

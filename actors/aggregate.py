"""The pure aggregate contract: decide(state, command) -> events, evolve(state, event) -> state."""

from __future__ import annotations

from typing import Protocol, TypeVar

from events.base import Command, DomainModel, Event

S = TypeVar("S", bound=DomainModel)


class DomainError(Exception):
    """A command breaks a business rule. `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Aggregate(Protocol[S]):
    """One aggregate type. Implementations import neither Ray nor Kafka."""

    aggregate_type: str
    state_type: type[S]
    benign_rejections: frozenset[str]
    """Rejection codes that are harmless no-ops when a command from another service's policy
    meets them. Every other rejection of such a command is dead-lettered with its reason."""

    def initial(self) -> S: ...

    def decide(self, state: S, command: Command) -> list[Event]: ...

    def evolve(self, state: S, event: Event) -> S: ...

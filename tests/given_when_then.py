"""A tiny given-when-then harness for pure aggregates."""

from __future__ import annotations

from typing import Any

import pytest

from actors.aggregate import Aggregate, DomainError
from events.base import Command, Event


class Scenario:
    def __init__(self, aggregate: Aggregate[Any], history: list[Event]) -> None:
        self.aggregate = aggregate
        self.state = aggregate.initial()
        for event in history:
            self.state = aggregate.evolve(self.state, event)
        self.command: Command | None = None

    def when(self, command: Command) -> Scenario:
        self.command = command
        return self

    def then(self, *expected: Event) -> Any:
        assert self.command is not None
        events = self.aggregate.decide(self.state, self.command)
        assert events == list(expected)
        state = self.state
        for e in events:
            state = self.aggregate.evolve(state, e)
        return state

    def then_rejected(self, code: str, match: str | None = None) -> DomainError:
        assert self.command is not None
        with pytest.raises(DomainError, match=match) as info:
            self.aggregate.decide(self.state, self.command)
        assert info.value.code == code
        return info.value


def given(aggregate: Aggregate[Any], *history: Event) -> Scenario:
    return Scenario(aggregate, list(history))

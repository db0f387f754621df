"""The workload contract that `choreo loadtest` and `choreo demo` drive, for any declared
choreography. A workload is named by import path (`metadata.workload` in cluster.yaml, or
`choreo loadtest --workload`) and built with the run id and the `--mix KEY=VALUE` options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from events.base import Command, StoredEvent
from events.declared import DeclarationError, resolve


@dataclass(frozen=True)
class Saga:
    """One saga to start: `commands` are submitted in order, the first starts it. `saga_id` is
    the correlation id its events carry and the key of its terminal event."""

    saga_id: str
    commands: Sequence[Command]


@dataclass
class Audit:
    """A run's invariants, checked from the event log: ok when nothing is violated."""

    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    """Totals worth reporting (e.g. money captured), as JSON-able values."""

    @property
    def ok(self) -> bool:
        return not self.violations


@runtime_checkable
class Workload(Protocol):
    """A stream of sagas of one run. Every aggregate id it creates starts with `<run>-`, so
    the run's events can be told apart on a shared log."""

    saga_topic: str
    """The events topic (as declared, without prefix) whose terminal events end its sagas."""
    outcomes: Mapping[str, str]
    """Terminal event type -> outcome label, e.g. {"OrderConfirmed": "confirmed"}."""
    visible_projection: str | None
    """A projection of the saga topic: a saga is visible once it passed its terminal event."""

    def setup(self) -> list[Command]:
        """Commands that prepare the run (e.g. stock), submitted before the load starts."""
        ...

    def next_saga(self) -> Saga: ...

    def audit(self, events: list[StoredEvent], saga_ids: list[str]) -> Audit:
        """Check the run's invariants from its events (every service's, keyed `<run>-...`)."""
        ...


def load_workload(path: str, key: str, run: str, seed: int, mix: Mapping[str, str]) -> Workload:
    """Build the workload at `path` for one run: called as `factory(run, seed=seed, **mix)`, with
    `mix` values as given on the command line (numbers converted)."""
    factory = resolve(path, key)
    if not callable(factory):
        raise DeclarationError(f"{key}: {path!r} is not a class or factory")
    try:
        workload = factory(run, seed=seed, **{k: _number(v) for k, v in mix.items()})
    except TypeError as exc:
        raise DeclarationError(f"{key}: cannot build {path!r} with mix {dict(mix)} ({exc})") from None
    if not isinstance(workload, Workload):
        raise DeclarationError(
            f"{key}: {path!r} does not implement the workload contract (saga_topic, outcomes, visible_projection, "
            "setup, next_saga, audit)"
        )
    return workload


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value

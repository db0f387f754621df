"""Policies: pure functions `(event, meta) -> [commands]`, and the wiring table that says which
policy reacts to which event.

Each service owns the policies that produce *its* commands, reacting to other services' events,
in one wiring table (a list of `On(EventType, policy)` rows) that cluster.yaml names as the
service's `policies:`. No component knows the whole saga. A policy's command ids derive from the
event id (`meta.ids(n)`), so running it twice on the same event yields the same commands, which
the target shard deduplicates."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from events.base import Command, Event, StoredEvent

Policy = Callable[[Any, "Meta"], Sequence[Command]]


@dataclass(frozen=True)
class Meta:
    """What a policy may copy from the event's envelope onto the commands it sends."""

    event_id: str
    correlation_id: str

    def ids(self, n: int) -> dict[str, str]:
        return {
            "command_id": f"{self.event_id}:{n}",
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
        }


@dataclass(frozen=True)
class On:
    """Wiring row: when an event of `event` type arrives, run `policy`."""

    event: type[Event]
    policy: Policy


def run_policies(wiring: Sequence[On], stored: StoredEvent, services: Collection[str] | None = None) -> list[Command]:
    """The commands the wiring's policies make in reaction to `stored`. With `services` (the
    declared ones), a command for any other service is a policy bug: ValueError, naming it."""
    meta = Meta(stored.envelope.event_id, stored.envelope.correlation_id)
    commands: list[Command] = []
    for row in wiring:
        if isinstance(stored.payload, row.event):
            commands.extend(row.policy(stored.payload, meta))
    if services is not None:
        stray = sorted({f"{type(c).__name__} for {c.target!r}" for c in commands if c.target not in services})
        if stray:
            raise ValueError(
                f"a policy reacting to {stored.envelope.event_type} made {', '.join(stray)}, "
                f"not a declared service (metadata.services has {', '.join(sorted(services))})"
            )
    return commands


@dataclass(frozen=True)
class Reaction:
    """What one wiring row made of an event: its commands, or the error its policy raised."""

    policy: str
    commands: tuple[Command, ...]
    error: str = ""


def reactions(wiring: Sequence[On], stored: StoredEvent) -> list[Reaction]:
    """The reaction of each row of `wiring` that matches `stored`, in wiring order. A policy that
    raises gives a Reaction with no commands and its error (its runner dead-letters the event)."""
    meta = Meta(stored.envelope.event_id, stored.envelope.correlation_id)
    found: list[Reaction] = []
    for row in wiring:
        if isinstance(stored.payload, row.event):
            try:
                found.append(Reaction(policy_name(row.policy), tuple(row.policy(stored.payload, meta))))
            except Exception as exc:
                found.append(Reaction(policy_name(row.policy), (), f"{type(exc).__name__}: {exc}"))
    return found


def reacting_types(wiring: Sequence[On], events: Iterable[type[Event]]) -> frozenset[str]:
    """Type names of the `events` some row of the wiring reacts to (a row matches subclasses too)."""
    return frozenset(cls.type_name() for cls in events if any(issubclass(cls, row.event) for row in wiring))


def policy_name(policy: Policy) -> str:
    """How maps, traces and reports name a policy: its function name."""
    return str(getattr(policy, "__name__", None) or type(policy).__name__)


def source_services(wiring: Sequence[On]) -> list[str]:
    return sorted({row.event.aggregate_type for row in wiring})

"""The user's domain as cluster.yaml declares it: one place that loads every kind of declared
code (see events.declared), for the bootstrap's checks. The policy wiring loader lives here,
next to the policy contract."""

from __future__ import annotations

from collections.abc import Sequence

from actors.declared import load_aggregate
from choreography.policies import On
from events.declared import IMPORT_PATH, DeclarationError, load_messages, load_registry, resolve
from projections.declared import load_projection

__all__ = [
    "IMPORT_PATH",
    "DeclarationError",
    "load_aggregate",
    "load_messages",
    "load_projection",
    "load_registry",
    "load_wiring",
    "resolve",
]


def load_wiring(path: str | None, key: str, service: str) -> list[On]:
    """The service's policy wiring table: a sequence of `On(EventType, policy)` rows (none when
    the service reacts to nothing)."""
    if path is None:
        return []
    wiring = resolve(path, key)
    if not isinstance(wiring, Sequence) or not all(isinstance(row, On) for row in wiring):
        raise DeclarationError(f"{key}: {path!r} is not a list of choreography.On rows")
    for row in wiring:
        if row.event.aggregate_type == service:
            raise DeclarationError(
                f"{key}: {service} reacts to its own event {row.event.type_name()}; a service's policies react "
                "to other services' events (decide it in the aggregate instead)"
            )
    return list(wiring)

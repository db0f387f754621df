"""Loading a declared aggregate (metadata.services.<service>.aggregate) and checking its contract."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from actors.aggregate import Aggregate, HasDeadlines
from events.declared import DeclarationError, resolve


def load_aggregate(path: str, key: str, service: str, deadline_s: float | None = None) -> Aggregate[Any]:
    """Build the service's aggregate: `path` names a class or factory, called with no arguments,
    or with `deadline=timedelta(seconds=deadline_s)` when the service declares a deadline."""
    factory = resolve(path, key)
    if not callable(factory):
        raise DeclarationError(f"{key}: {path!r} is not a class or factory")
    no_deadlines = f"{key}: deadline_s is set but {path!r} has no deadline support (due_at/expire, see HasDeadlines)"
    if deadline_s and isinstance(factory, type) and not issubclass(factory, HasDeadlines):
        raise DeclarationError(no_deadlines)
    try:
        aggregate = factory(deadline=timedelta(seconds=deadline_s)) if deadline_s else factory()
    except Exception as exc:
        raise DeclarationError(f"{key}: cannot build {path!r} ({type(exc).__name__}: {exc})") from None
    missing = [m for m in ("initial", "decide", "evolve") if not callable(getattr(aggregate, m, None))]
    if missing:
        raise DeclarationError(f"{key}: {path!r} does not implement {'/'.join(missing)}")
    for attr in ("aggregate_type", "state_type"):
        if not hasattr(aggregate, attr):
            raise DeclarationError(f"{key}: {path!r} has no {attr!r}")
    if aggregate.aggregate_type != service:
        raise DeclarationError(f"{key}: {path!r} has aggregate_type {aggregate.aggregate_type!r}, not {service!r}")
    if deadline_s and not isinstance(aggregate, HasDeadlines):
        raise DeclarationError(no_deadlines)
    checked: Aggregate[Any] = aggregate
    return checked

"""Typed errors of the public client API, raised where they arise and gathered here."""

from __future__ import annotations

from actors.outcomes import CommandRejected, ShardUnavailable
from events.registry import InvalidCommand
from projections.errors import ProjectionTimeout, QueryError, QueryRejected


class NotDeployed(LookupError):
    """No deployment (or not all of it) runs in the Ray namespace asked for."""


__all__ = [
    "CommandRejected",
    "InvalidCommand",
    "NotDeployed",
    "ProjectionTimeout",
    "QueryError",
    "QueryRejected",
    "ShardUnavailable",
]

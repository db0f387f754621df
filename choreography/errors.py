"""Typed errors of the public client API, raised where they arise and gathered here."""

from __future__ import annotations

from actors.outcomes import CommandRejected, ShardUnavailable
from events.registry import InvalidCommand
from projections.errors import ProjectionTimeout, QueryError, QueryRejected

__all__ = [
    "CommandRejected",
    "InvalidCommand",
    "ProjectionTimeout",
    "QueryError",
    "QueryRejected",
    "ShardUnavailable",
]

"""Choreography runtime and the public client API: `system = choreography.connect("cluster.yaml")`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from choreography.errors import (
    CommandRejected,
    InvalidCommand,
    ProjectionTimeout,
    QueryError,
    QueryRejected,
    ShardUnavailable,
)

if TYPE_CHECKING:
    from choreography.system import System, connect


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562) for speed, not to hide a cycle (lint-imports proves there is none): domain
    # code imports choreography.policies and choreography.testing, which must not load Ray and Kafka.
    if name in ("System", "connect"):
        from choreography import system

        return getattr(system, name)
    raise AttributeError(name)


__all__ = [
    "CommandRejected",
    "InvalidCommand",
    "ProjectionTimeout",
    "QueryError",
    "QueryRejected",
    "ShardUnavailable",
    "System",
    "connect",
]

"""Typed errors of the public client API."""

from __future__ import annotations

from events.registry import InvalidCommand


class CommandRejected(Exception):
    """The domain refused a command. `code` is machine-readable, `reason` says why."""

    def __init__(self, command_id: str, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.command_id = command_id
        self.code = code
        self.reason = reason


class ShardUnavailable(RuntimeError):
    """No shard answered in time; the command may be retried with the same command id."""


class ProjectionTimeout(TimeoutError):
    """A projection did not reach the requested positions in time."""


class QueryRejected(Exception):
    """The analytics query API is read-only: this SQL writes, changes settings, runs more than
    one statement or reaches outside the database (files, URLs, other servers)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"query rejected: {self.reason}"


class QueryError(Exception):
    """ClickHouse could not run a query (syntax error, unknown table...); carries its message."""


__all__ = [
    "CommandRejected",
    "InvalidCommand",
    "ProjectionTimeout",
    "QueryError",
    "QueryRejected",
    "ShardUnavailable",
]

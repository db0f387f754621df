"""Errors of the read side: timeouts waiting for a projection, and rejected or failed queries."""

from __future__ import annotations


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


class SinkUnavailable(ConnectionError):
    """ClickHouse cannot be reached, or refused the connection; the message names the DSN with
    its password masked."""

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


__all__ = ["CommandRejected", "InvalidCommand", "ProjectionTimeout", "ShardUnavailable"]

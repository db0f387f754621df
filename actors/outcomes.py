"""What handling a command yields: the appended events, or a typed rejection."""

from __future__ import annotations

from dataclasses import dataclass, field

from events.base import StoredEvent


@dataclass(frozen=True)
class Accepted:
    command_id: str
    events: list[StoredEvent] = field(default_factory=list)
    duplicate: bool = False
    """True when this command id was applied before; `events` are then the original ones if known."""

    ok = True


@dataclass(frozen=True)
class Rejected:
    command_id: str
    code: str
    reason: str
    duplicate: bool = False
    """True when this command id was decided before: the original rejection, not a new decision."""

    ok = False


Outcome = Accepted | Rejected


class CommandRejected(Exception):
    """The domain refused a command. `code` is machine-readable, `reason` says why."""

    def __init__(self, command_id: str, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.command_id = command_id
        self.code = code
        self.reason = reason


class ShardUnavailable(RuntimeError):
    """No shard answered in time; the command may be retried with the same command id."""

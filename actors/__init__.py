"""The aggregate contract (pure domain logic) and the Ray shard actors that host aggregates."""

from __future__ import annotations

from actors.aggregate import (
    Aggregate,
    DomainError,
    HasBenignRejections,
    HasDeadlines,
    HasTerminalStates,
    benign_rejections,
    fold,
    is_terminal,
)

__all__ = [
    "Aggregate",
    "DomainError",
    "HasBenignRejections",
    "HasDeadlines",
    "HasTerminalStates",
    "benign_rejections",
    "fold",
    "is_terminal",
]

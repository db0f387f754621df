"""The projection contract: ClickHouse DDL plus a pure mapping from events to rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from events.base import StoredEvent

POSITION_COLUMNS = ("_topic", "_partition", "_offset")
POSITION_DDL = "_topic LowCardinality(String), _partition UInt32, _offset UInt64"

Row = tuple[Any, ...]
Lookup = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]
"""Runs a parameterised SELECT against the read store and returns its rows."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    """Data columns, in insert order; the position columns are appended by the runner."""
    ddl: str
    """CREATE TABLE IF NOT EXISTS ... ; must declare the position columns via POSITION_DDL."""


class Projection(ABC):
    """Turns a batch of events into rows per table. Holds no I/O of its own but `lookup`."""

    name: str
    topics: Sequence[str]
    tables: Sequence[Table]

    @abstractmethod
    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        """Rows per table name. Each row is the data columns followed by the event's position."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget any cached state (called before a rebuild)."""


def position(event: StoredEvent) -> Row:
    return (event.topic, event.partition, event.offset)

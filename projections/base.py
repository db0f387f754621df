"""The projection contract: ClickHouse DDL plus a pure mapping from events to rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    """CREATE TABLE IF NOT EXISTS <name> (...); must declare the position columns via POSITION_DDL
    (a view's target table holds no positions)."""
    positioned: bool = True
    """False for a table whose rows hold no log position (not a projection's: see otel_traces)."""
    added: tuple[tuple[str, str], ...] = ()
    """(column, type) of columns added since the table was first released (and in the DDL too): a
    table created before gets them with ALTER TABLE ... ADD COLUMN IF NOT EXISTS."""

    def renamed(self, suffix: str) -> Table:
        """The same table under `<name><suffix>` (a rebuild builds its fresh tables this way)."""
        if not suffix:
            return self
        head = f"CREATE TABLE IF NOT EXISTS {self.name} "
        if head not in self.ddl:
            raise ValueError(f"DDL of {self.name} must start with {head!r}")
        ddl = self.ddl.replace(head, f"CREATE TABLE IF NOT EXISTS {self.name}{suffix} ", 1)
        return Table(self.name + suffix, self.columns, ddl, self.positioned, self.added)


@dataclass(frozen=True)
class View:
    """A materialized view from a projection table `source` into its own `target` table: created
    after, dropped before, the tables; a rebuild builds source and target afresh together."""

    name: str
    source: str
    target: Table
    select: str
    """The view's SELECT, reading `FROM {source}`."""

    def ddl(self, suffix: str = "") -> str:
        select = self.select.format(source=self.source + suffix)
        return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name}{suffix} TO {self.target.name}{suffix} AS {select}"


class Projection(ABC):
    """Turns a batch of events into rows per table. Holds no I/O of its own but `lookup`."""

    name: str
    topics: Sequence[str]
    tables: Sequence[Table]
    views: Sequence[View] = ()
    suffix: str = ""
    """Set on the instance that builds fresh tables during a rebuild: its tables are `<name><suffix>`."""

    @abstractmethod
    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        """Rows per table name. Each row is the data columns followed by the event's position."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget any cached state (called before a rebuild)."""


def _utc(value: Any) -> Any:
    """ClickHouse hands DateTime64('UTC') back as naive datetimes; events carry aware ones."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def position(event: StoredEvent) -> Row:
    return (event.topic, event.partition, event.offset)


class RowPerKey(Projection):
    """One evolving row per key (an order, a SKU): each event folds into the key's latest row.

    The latest rows are cached; after a restart a missing key is read back from the table
    itself, so the projection needs no state outside ClickHouse."""

    table: Table
    key: str
    cache_size = 200_000
    lookup_chunk = 2_000

    def __init__(self) -> None:
        self.tables = (self.table,)
        self._latest: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @abstractmethod
    def key_of(self, event: StoredEvent) -> str | None:
        """The row key this event updates, or None when the event is of no interest."""

    @abstractmethod
    def apply(self, row: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
        """The key's new row (all columns) after `event`, or None to write nothing."""

    def reset(self) -> None:
        self._latest.clear()

    def _load(self, keyed: list[tuple[str | None, StoredEvent]], lookup: Lookup) -> None:
        """Read back the latest row of keys whose history starts before this batch."""
        first: dict[str, int] = {}
        for key, event in keyed:
            if key is not None and key not in first:
                first[key] = event.version
        missing = [k for k, v in first.items() if v > 1 and k not in self._latest]
        cols = ", ".join(self.table.columns)
        sql = (
            f"SELECT {cols} FROM {self.table.name}{self.suffix} WHERE {self.key} IN %(keys)s "
            f"ORDER BY version DESC LIMIT 1 BY {self.key}"
        )
        for start in range(0, len(missing), self.lookup_chunk):
            for values in lookup(sql, {"keys": missing[start : start + self.lookup_chunk]}):
                row = {c: _utc(v) for c, v in zip(self.table.columns, values, strict=True)}
                self._remember(row[self.key], row)

    def _remember(self, key: str, row: dict[str, Any]) -> None:
        self._latest[key] = row
        self._latest.move_to_end(key)
        if len(self._latest) > self.cache_size:
            self._latest.popitem(last=False)

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        keyed = [(self.key_of(e), e) for e in events]
        self._load(keyed, lookup)
        rows: list[Row] = []
        for key, event in keyed:
            if key is None:
                continue
            row = self.apply(self._latest.get(key), event)
            if row is None:
                continue
            self._remember(key, row)
            rows.append((*(row[c] for c in self.table.columns), *position(event)))
        return {self.table.name: rows}

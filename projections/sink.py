"""ClickHouse access through clickhouse-connect: embedded chdb:// or an http(s):// server."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.binding import finalize_query
from clickhouse_connect.driver.exceptions import ClickHouseError

from projections.base import POSITION_COLUMNS, Row, Table
from projections.dsn import redacted, resolved, scrubbed
from projections.errors import QueryError, SinkUnavailable
from projections.readonly import check_read_only


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


def connect(dsn: str, **options: Any) -> Any:
    """A clickhouse-connect client; a failure raises SinkUnavailable, which never holds the password."""
    real = resolved(dsn)
    try:
        return clickhouse_connect.get_client(dsn=real, **options)
    except Exception as exc:
        message = scrubbed(" ".join(str(exc).split()), real)
        raise SinkUnavailable(f"cannot connect to ClickHouse at {redacted(dsn)}: {message}") from None


class ClickHouseSink:
    """Thread-safe wrapper: one client, batched inserts, and the stored Kafka positions."""

    def __init__(self, dsn: str) -> None:
        if dsn.startswith("chdb://") and dsn not in ("chdb://", "chdb://memory"):
            Path(dsn[len("chdb://") :]).mkdir(parents=True, exist_ok=True)
        self.dsn = dsn
        self.client = connect(dsn)
        self.lock = threading.RLock()
        self.reader: Any = None
        self.table_functions: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"ClickHouseSink({redacted(self.dsn)!r})"

    def command(self, sql: str) -> Any:
        with self.lock:
            return self.client.command(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        with self.lock:
            result = self.client.query(sql, parameters=parameters)
            return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    def read_only_query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        """Run untrusted analytics SQL: guarded (QueryRejected), on a separate client whose
        session is read-only, with ClickHouse errors raised as QueryError.

        Parameters are bound client-side (`%(name)s`) before the guard sees the final text."""
        try:
            text = finalize_query(sql, parameters) if parameters else sql
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryError(f"cannot bind parameters: {exc!r}") from None
        with self.lock:
            reader = self._reader()
            check_read_only(text, self.table_functions)
            try:
                result = reader.query(text)
            except ClickHouseError as exc:
                raise QueryError(" ".join(str(exc).split())) from None
            return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    def _reader(self) -> Any:
        if self.reader is None:
            # chDB keeps readonly=1 for the client's whole session. Over HTTP clickhouse-connect
            # sends its own settings with each query, which readonly=1 would refuse; readonly=2
            # still refuses every write and the guard refuses any SET or SETTINGS.
            readonly = 1 if self.dsn.startswith("chdb://") else 2
            self.reader = connect(self.dsn, settings={"readonly": readonly})
            functions = self.reader.query("SELECT name FROM system.table_functions").result_rows
            self.table_functions = frozenset(str(name) for (name,) in functions)
        return self.reader

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.query(sql, parameters).rows

    def create(self, table: Table) -> None:
        self.command(table.ddl)
        for column, kind in table.added:
            self.command(f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS {column} {kind}")

    def drop(self, table: Table) -> None:
        self.command(f"DROP TABLE IF EXISTS {table.name}")

    def insert(self, table: Table, rows: list[Row]) -> None:
        if rows:
            with self.lock:
                positions = POSITION_COLUMNS if table.positioned else ()
                self.client.insert(table.name, rows, column_names=[*table.columns, *positions])

    def max_offsets(self, table: Table) -> dict[tuple[str, int], int]:
        """The highest Kafka offset stored in `table`, per (topic, partition)."""
        sql = f"SELECT _topic, _partition, max(_offset) FROM {table.name} GROUP BY _topic, _partition"
        return {(t, int(p)): int(o) for t, p, o in self.rows(sql)}

    def close(self) -> None:
        with self.lock:
            if self.reader is not None:
                self.reader.close()
            self.client.close()

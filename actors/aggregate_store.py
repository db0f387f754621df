"""Where a shard keeps the aggregates it does not hold in memory: one SQLite file per partition,
beside the shard, that is a cache of the partition's `<service>-snapshots` records (as a Kafka
Streams state store is a cache of its changelog) plus the aggregates passivation evicted since.

The file remembers the snapshot-topic offset it has applied and the event offset its snapshot
content covers, so a restart on the same node reads only the topics' tails. Lost, stale or
corrupt, it is rebuilt from the snapshot topic and the event log. Every row holds state that a
committed transaction produced, so a row is never ahead of the log; it may be ahead of the
checkpoint (an evicted aggregate), and replay then skips the events the row already holds."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("choreo.shard")

Row = tuple[str, int, float | None, bytes]
"""(aggregate id, version, deadline as a POSIX timestamp or None, encoded snapshot entry)."""


class PartitionStore:
    """The aggregates of one partition, with the snapshot-topic offset applied and the event
    offset the applied snapshots cover. `path=None` keeps them in memory (tests, no state dir)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            assert path is not None
            log.warning("aggregate store %s is unreadable (%s); rebuilding it from the topics", path, exc)
            path.unlink(missing_ok=True)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path or ":memory:", isolation_level=None, check_same_thread=False)
        # A cache of Kafka topics: a lost tail is caught up again, so no fsync is needed.
        db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
            "CREATE TABLE IF NOT EXISTS aggregates (aggregate_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " due REAL, entry BLOB NOT NULL);"
            "CREATE INDEX IF NOT EXISTS aggregates_due ON aggregates (due) WHERE due IS NOT NULL;"
            "CREATE TABLE IF NOT EXISTS applied (id INTEGER PRIMARY KEY CHECK (id = 0),"
            " snapshot_next INTEGER NOT NULL, checkpoint INTEGER, schema TEXT NOT NULL DEFAULT '');"
        )
        # A file of an older layout fails here, and is rebuilt like a corrupt one.
        db.execute("SELECT aggregate_id, version, due, entry FROM aggregates LIMIT 1").fetchone()
        db.execute("SELECT snapshot_next, checkpoint, schema FROM applied").fetchone()
        return db

    @property
    def snapshot_next(self) -> int:
        """The snapshot-topic offset to read on from."""
        row = self.db.execute("SELECT snapshot_next FROM applied").fetchone()
        return int(row[0]) if row else 0

    @property
    def checkpoint(self) -> int | None:
        """The event offset the applied snapshots cover (replay starts there), or None."""
        row = self.db.execute("SELECT checkpoint FROM applied").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    @property
    def schema(self) -> str:
        """The fingerprint of the state schema its rows were written under."""
        row = self.db.execute("SELECT schema FROM applied").fetchone()
        return str(row[0]) if row else ""

    def forget(self, schema: str) -> None:
        """Empty the store, to be read afresh from offset 0, for rows of the state `schema`."""
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM aggregates")
        self.db.execute("INSERT OR REPLACE INTO applied VALUES (0, 0, NULL, ?)", (schema,))
        self.db.execute("COMMIT")

    def load(self, ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = f"SELECT aggregate_id, entry FROM aggregates WHERE aggregate_id IN ({','.join('?' * len(chunk))})"
            found.update(self.db.execute(sql, chunk))
        return found

    def put(self, rows: Iterable[Row]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO aggregates VALUES (?, ?, ?, ?)", rows)
        self.db.execute("COMMIT")

    def apply_snapshot(self, rows: Iterable[Row], checkpoint: int | None, snapshot_next: int, wipe: bool) -> None:
        """Store one snapshot of the partition (its changed aggregates and checkpoint) and the
        snapshot-topic offset it reaches, atomically. `wipe` first forgets every aggregate: the
        snapshots were dropped (the shards replay from the log), or could not be read."""
        self.db.execute("BEGIN")
        if wipe:
            self.db.execute("DELETE FROM aggregates")
        self.db.executemany("INSERT OR REPLACE INTO aggregates VALUES (?, ?, ?, ?)", rows)
        self.db.execute(
            "INSERT INTO applied VALUES (0, ?, ?, '') ON CONFLICT (id) DO UPDATE"
            " SET snapshot_next = excluded.snapshot_next, checkpoint = excluded.checkpoint",
            (snapshot_next, checkpoint),
        )
        self.db.execute("COMMIT")

    def dues(self) -> Iterator[tuple[str, datetime]]:
        """Every stored aggregate with an open deadline, and when it falls due."""
        for agg_id, due in self.db.execute("SELECT aggregate_id, due FROM aggregates WHERE due IS NOT NULL"):
            yield agg_id, datetime.fromtimestamp(due, UTC)

    def rows(self) -> Iterator[tuple[str, bytes]]:
        yield from self.db.execute("SELECT aggregate_id, entry FROM aggregates ORDER BY aggregate_id")

    def size(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM aggregates").fetchone()[0])

    def close(self) -> None:
        self.db.close()

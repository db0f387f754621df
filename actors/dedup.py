"""Durable deduplication of client commands: the outcome of every client command is written to a
keyed `<service>-dedup` topic in the shard's own transaction, and a local SQLite index per
partition answers lookups without holding the window in memory.

The index is a cache of the topic: it only ever holds committed records, remembers the topic
offset it has applied, and catches up from there on start. Lost or corrupt, it is rebuilt from
the topic, which retains the window (24 hours by default)."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from events.log.records import LogRecord

log = logging.getLogger("choreo.dedup")

PURGE_EVERY_S = 60.0


@dataclass(frozen=True)
class Recorded:
    """What a client command led to: its events' (partition, offset), or a domain rejection."""

    at: float
    positions: tuple[tuple[int, int], ...] = ()
    code: str = ""
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return not self.code

    def encode(self) -> bytes:
        if self.accepted:
            return json.dumps({"at": self.at, "events": self.positions}).encode()
        return json.dumps({"at": self.at, "code": self.code, "reason": self.reason}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Recorded:
        d = json.loads(raw)
        positions = tuple((int(p), int(o)) for p, o in d.get("events", ()))
        return cls(at=float(d["at"]), positions=positions, code=d.get("code", ""), reason=d.get("reason", ""))


class PartitionIndex:
    """command id -> Recorded for one partition, in a SQLite file, plus the dedup-topic offset
    up to which it holds every committed record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            log.warning("dedup index %s is unreadable (%s); rebuilding it from the topic", path.name, exc)
            path.unlink(missing_ok=True)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # A cache of a Kafka topic: a lost tail is caught up again, so no fsync is needed.
        db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
            "CREATE TABLE IF NOT EXISTS outcomes"
            " (command_id TEXT PRIMARY KEY, at REAL NOT NULL, outcome BLOB NOT NULL);"
            "CREATE INDEX IF NOT EXISTS outcomes_at ON outcomes (at);"
            "CREATE TABLE IF NOT EXISTS applied (id INTEGER PRIMARY KEY CHECK (id = 0), next_offset INTEGER NOT NULL);"
        )
        db.execute("SELECT count(*) FROM applied").fetchone()
        return db

    @property
    def next_offset(self) -> int:
        row = self.db.execute("SELECT next_offset FROM applied").fetchone()
        return int(row[0]) if row else 0

    def lookup(self, ids: list[str], since: float) -> dict[str, Recorded]:
        found: dict[str, Recorded] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT command_id, outcome FROM outcomes WHERE command_id IN ({marks}) AND at >= ?"
            for cid, raw in self.db.execute(sql, (*chunk, since)):
                found[cid] = Recorded.decode(raw)
        return found

    def add(self, rows: Iterable[tuple[str, Recorded]], next_offset: int) -> None:
        """Store committed records and the topic offset they reach, atomically."""
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?)", ((cid, r.at, r.encode()) for cid, r in rows)
        )
        self.db.execute("INSERT OR REPLACE INTO applied VALUES (0, ?)", (next_offset,))
        self.db.execute("COMMIT")

    def purge(self, before: float) -> int:
        return self.db.execute("DELETE FROM outcomes WHERE at < ?", (before,)).rowcount

    def size(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outcomes").fetchone()[0])

    def close(self) -> None:
        self.db.close()


class DedupStore:
    """The dedup indexes of the partitions one shard owns."""

    def __init__(self, directory: Path, partitions: Iterable[int], window_s: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.window_s = window_s
        self.indexes = {p: PartitionIndex(directory / f"p{p}.sqlite3") for p in partitions}
        self.purged_at = 0.0

    def starts(self) -> dict[int, int]:
        """Per partition, the dedup-topic offset to catch up from."""
        return {p: index.next_offset for p, index in self.indexes.items()}

    def catch_up(self, messages: Iterable[LogRecord], chunk: int = 10_000) -> int:
        """Apply committed records the indexes miss (a crash after a commit, a lost index)."""
        since = time.time() - self.window_s
        pending: dict[int, list[tuple[str, Recorded]]] = {}
        ends: dict[int, int] = {}
        applied = 0
        for msg in messages:
            p, offset = msg.partition() or 0, msg.offset() or 0
            ends[p] = offset + 1
            recorded = Recorded.decode(msg.value() or b"{}")
            if recorded.at >= since:
                pending.setdefault(p, []).append(((msg.key() or b"").decode(), recorded))
            if len(pending.get(p, ())) >= chunk:
                applied += self._apply(p, pending.pop(p), ends[p])
        for p, end in ends.items():
            applied += self._apply(p, pending.pop(p, []), end)
        return applied

    def _apply(self, p: int, rows: list[tuple[str, Recorded]], next_offset: int) -> int:
        self.indexes[p].add(rows, next_offset)
        return len(rows)

    def lookup(self, partition: int, ids: list[str]) -> dict[str, Recorded]:
        return self.indexes[partition].lookup(ids, time.time() - self.window_s)

    def add(self, partition: int, rows: list[tuple[str, Recorded]], next_offset: int) -> None:
        self.indexes[partition].add(rows, next_offset)

    def maybe_purge(self) -> None:
        """Forget outcomes older than the window (at most once a minute)."""
        now = time.time()
        if now - self.purged_at >= PURGE_EVERY_S:
            self.purged_at = now
            for index in self.indexes.values():
                index.purge(now - self.window_s)

    def release(self, partition: int) -> None:
        """Partition `partition` moved to another shard: close its index (its new owner reads it,
        when on this node, or rebuilds it from the topic)."""
        self.indexes.pop(partition).close()

    def absorb(self, other: DedupStore) -> None:
        """Take over the indexes of partitions `other` caught up (a partition moved here)."""
        self.indexes |= other.indexes
        other.indexes = {}

    def size(self) -> int:
        return sum(index.size() for index in self.indexes.values())

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()

"""The read-side sink's contract, written once and run against every ClickHouse backend.

Like the `eventsourcing` library's recorder test cases, `SinkContract` is abstract: a backend's
test class subclasses it and says only how to open a fresh `ClickHouseSink` on an empty, isolated
database. Every test here must then pass unchanged: DDL, inserts and types, resume positions, the
read-only query API, and the rebuild swap of `projections.runner`."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import projections.sink
from choreography.errors import QueryError, QueryRejected
from events.base import StoredEvent
from projections.base import POSITION_COLUMNS, POSITION_DDL, Lookup, Projection, Row, Table, View, position
from projections.runner import OLD, REBUILD, discard_rebuild, parked_table, promote, recover
from projections.sink import ClickHouseSink

# ---- a small projection of the contract's own ------------------------------------------------

EVENTS = Table(
    name="contract_events",
    columns=("event_id", "aggregate_id", "version", "at"),
    ddl=f"""
CREATE TABLE IF NOT EXISTS contract_events (
    event_id String, aggregate_id String, version Int64, at DateTime64(6, 'UTC'), {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (_topic, _partition, _offset)""",
)

AGGREGATES = Table(
    name="contract_aggregates",
    columns=("aggregate_id", "version"),
    ddl=f"""
CREATE TABLE IF NOT EXISTS contract_aggregates (
    aggregate_id String, version Int64, {POSITION_DDL}
) ENGINE = ReplacingMergeTree(version) ORDER BY aggregate_id""",
)

COUNTS = View(
    name="contract_counts_mv",
    source=EVENTS.name,
    target=Table(
        name="contract_counts",
        columns=("aggregate_id", "events"),
        ddl="""
CREATE TABLE IF NOT EXISTS contract_counts (
    aggregate_id String, events UInt64
) ENGINE = SummingMergeTree ORDER BY aggregate_id""",
    ),
    select="SELECT aggregate_id, count() AS events FROM {source} GROUP BY aggregate_id",
)


class ContractProjection(Projection):
    """Every event as a row, the latest version per aggregate, and a view counting events."""

    name = "contract"
    topics = ("contract-events",)
    tables = (EVENTS, AGGREGATES)
    views = (COUNTS,)

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        rows: dict[str, list[Row]] = {EVENTS.name: [], AGGREGATES.name: []}
        for ev in events:
            env = ev.envelope
            rows[EVENTS.name].append((env.event_id, env.aggregate_id, env.version, env.occurred_at, *position(ev)))
            rows[AGGREGATES.name].append((env.aggregate_id, env.version, *position(ev)))
        return rows


PARKED = parked_table(ContractProjection.name)
AT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _table(name: str, *columns: str) -> Table:
    """A MergeTree table with the given data columns (each `name type`) and the position columns."""
    ddl = (
        f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(columns)}, {POSITION_DDL}) ENGINE = MergeTree ORDER BY _offset"
    )
    return Table(name, tuple(c.split()[0] for c in columns), ddl)


def _tables(sink: ClickHouseSink) -> dict[str, str]:
    """Table name -> engine, in the sink's database."""
    rows = sink.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase()")
    return {str(name): str(engine) for name, engine in rows}


def _snapshot(sink: ClickHouseSink) -> dict[str, int]:
    """Row count of every table (views excluded) in the sink's database."""
    return {
        name: int(sink.query(f"SELECT count() FROM `{name}`").scalar())
        for name, engine in _tables(sink).items()
        if engine != "MaterializedView"
    }


@contextmanager
def _restarted(sink: ClickHouseSink) -> Iterator[ClickHouseSink]:
    """A second sink on the same database, as a restarted process would open it."""
    again = ClickHouseSink(sink.dsn)
    try:
        yield again
    finally:
        again.close()


class Crash(Exception):
    """Stands for the process dying in the middle of a step (kill -9)."""


def _crash_at(sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch, when: Callable[[int, str], bool]) -> None:
    """Make `sink.command` die, running nothing, at every call (numbered from 1) that `when` picks."""
    real = sink.command
    calls = 0

    def command(sql: str) -> Any:
        nonlocal calls
        calls += 1
        if when(calls, sql):
            raise Crash(sql)
        return real(sql)

    monkeypatch.setattr(sink, "command", command)


def _nth(step: int) -> Callable[[int, str], bool]:
    """Picks the `step`-th call."""
    return lambda calls, _sql: calls == step


class SinkContract(ABC):
    """Abstract: not collected by pytest. A backend subclasses it as `Test<Backend>Sink`."""

    @abstractmethod
    def fresh_sink(self, tmp_path: Path) -> AbstractContextManager[ClickHouseSink]:
        """A sink on a new empty database of its own; on exit the sink is closed, the database dropped."""

    @pytest.fixture
    def sink(self, tmp_path: Path) -> Iterator[ClickHouseSink]:
        with self.fresh_sink(tmp_path) as sink:
            yield sink

    # ---- DDL -------------------------------------------------------------------------------

    def test_a_fresh_sink_starts_on_an_empty_database(self, sink: ClickHouseSink) -> None:
        assert _tables(sink) == {}

    def test_create_makes_the_table_with_its_position_columns(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        assert _tables(sink) == {"contract_events": "MergeTree"}
        sql = "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s ORDER BY position"
        assert [c for (c,) in sink.rows(sql, {"t": EVENTS.name})] == [*EVENTS.columns, *POSITION_COLUMNS]

    def test_create_is_idempotent_and_keeps_the_rows(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0)])
        sink.create(EVENTS)
        assert sink.rows("SELECT event_id FROM contract_events") == [("e1",)]

    def test_create_adds_the_columns_added_since_to_a_table_made_before(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0)])
        grown = Table(
            EVENTS.name,
            (*EVENTS.columns, "note"),
            EVENTS.ddl.replace("at DateTime64(6, 'UTC'),", "at DateTime64(6, 'UTC'), note String,"),
            added=(("note", "String"),),
        )
        sink.create(grown)
        sink.create(grown.renamed("_v2"))
        sink.insert(grown, [("e2", "a", 2, AT, "hello", "t", 0, 1)])
        assert sink.rows("SELECT event_id, note FROM contract_events ORDER BY event_id") == [
            ("e1", ""),
            ("e2", "hello"),
        ]
        assert sink.rows("SELECT name FROM system.columns WHERE table = 'contract_events_v2' AND name = 'note'")

    def test_drop_removes_the_table_and_a_missing_table_is_no_error(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.create(AGGREGATES)
        sink.drop(EVENTS)
        assert set(_tables(sink)) == {AGGREGATES.name}
        sink.drop(EVENTS)
        assert set(_tables(sink)) == {AGGREGATES.name}

    def test_a_table_created_again_after_drop_is_empty(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0)])
        sink.drop(EVENTS)
        sink.create(EVENTS)
        assert sink.query("SELECT count() FROM contract_events").scalar() == 0
        assert sink.max_offsets(EVENTS) == {}

    def test_a_renamed_table_is_a_separate_table(self, sink: ClickHouseSink) -> None:
        fresh = EVENTS.renamed(REBUILD)
        sink.create(EVENTS)
        sink.create(fresh)
        sink.insert(fresh, [("e1", "a", 1, AT, "t", 0, 0)])
        assert set(_tables(sink)) == {"contract_events", "contract_events__rebuild"}
        assert sink.query("SELECT count() FROM contract_events").scalar() == 0
        assert sink.query("SELECT count() FROM contract_events__rebuild").scalar() == 1

    # ---- insert and read back ----------------------------------------------------------------

    def test_values_of_every_column_type_round_trip(self, sink: ClickHouseSink) -> None:
        table = _table(
            "contract_types",
            *("s String", "lc LowCardinality(String)", "i Int64", "u16 UInt16", "u32 UInt32", "u64 UInt64"),
            *("f Float64", "nf Nullable(Float64)", "at DateTime64(6, 'UTC')", "nat Nullable(DateTime64(6, 'UTC'))"),
        )
        later = AT + timedelta(days=400, microseconds=1)
        rows: list[Row] = [
            ("héllo 'q' \"dq\" \\ \n\t ✓", "card", -(2**63), 0, 0, 2**64 - 1, -0.25, None, AT, None, "t", 0, 1),
            ("", "", 2**63 - 1, 2**16 - 1, 2**32 - 1, 0, 1e300, 2.5, later, later, "t", 0, 2),
            ("x" * 10_000, "other", 0, 7, 8, 9, 0.0, -0.0, AT, AT, "t", 0, 3),
        ]
        sink.create(table)
        sink.insert(table, rows)
        got = sink.rows(f"SELECT * FROM {table.name} ORDER BY _offset")
        # DateTime64('UTC') reads back naive, in UTC (projections.base._utc relies on exactly this).
        want = [
            tuple(v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v for v in r) for r in rows
        ]
        assert got == want

    def test_an_aware_datetime_in_another_zone_is_stored_as_the_same_instant(self, sink: ClickHouseSink) -> None:
        table = _table("contract_times", "at DateTime64(6, 'UTC')")
        sink.create(table)
        sink.insert(table, [(datetime(2024, 1, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))), "t", 0, 0)])
        assert sink.rows(f"SELECT at FROM {table.name}") == [(datetime(2024, 1, 1, 10, 0, 0, 5),)]
        assert sink.rows(f"SELECT toUnixTimestamp64Micro(at) FROM {table.name}") == [(1704103200000005,)]

    def test_insert_maps_values_by_column_name_not_by_ddl_order(self, sink: ClickHouseSink) -> None:
        ddl = (
            "CREATE TABLE IF NOT EXISTS contract_order "
            f"({POSITION_DDL}, b Int64, a String) ENGINE = MergeTree ORDER BY _offset"
        )
        table = Table("contract_order", ("a", "b"), ddl)
        sink.create(table)
        sink.insert(table, [("x", 1, "t", 2, 3)])
        assert sink.query("SELECT a, b, _topic, _partition, _offset FROM contract_order").as_dicts() == [
            {"a": "x", "b": 1, "_topic": "t", "_partition": 2, "_offset": 3}
        ]

    def test_every_batch_is_kept_and_an_empty_batch_writes_nothing(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [])
        assert sink.query("SELECT count() FROM contract_events").scalar() == 0
        for batch in range(3):
            sink.insert(EVENTS, [(f"e{batch}-{i}", "a", i, AT, "t", 0, batch * 10 + i) for i in range(4)])
        assert sink.query("SELECT count(), uniqExact(event_id) FROM contract_events").rows == [(12, 12)]

    def test_a_refused_insert_raises_and_writes_nothing(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        with pytest.raises(Exception):  # noqa: B017 - the driver's own error type is backend-specific
            sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0), ("e2", "a", "not a number", AT, "t", 0, 1)])
        assert sink.query("SELECT count() FROM contract_events").scalar() == 0

    def test_inserts_from_several_threads_all_land(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)

        def write(partition: int) -> None:
            for batch in range(10):
                sink.insert(
                    EVENTS, [(f"{partition}-{batch}-{i}", "a", i, AT, "t", partition, batch * 5 + i) for i in range(5)]
                )

        threads = [threading.Thread(target=write, args=(p,)) for p in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sink.query("SELECT count() FROM contract_events").scalar() == 200
        assert sink.max_offsets(EVENTS) == {("t", p): 49 for p in range(4)}

    def test_a_materialized_view_fills_its_target_table_on_insert(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.create(COUNTS.target)
        sink.command(COUNTS.ddl())
        sink.insert(
            EVENTS, [("e1", "a", 1, AT, "t", 0, 0), ("e2", "a", 2, AT, "t", 0, 1), ("e3", "b", 1, AT, "t", 0, 2)]
        )
        sink.insert(EVENTS, [("e4", "a", 3, AT, "t", 0, 3)])
        sql = "SELECT aggregate_id, sum(events) FROM contract_counts GROUP BY aggregate_id ORDER BY aggregate_id"
        assert sink.rows(sql) == [("a", 3), ("b", 1)]

    # ---- queries -----------------------------------------------------------------------------

    def test_query_returns_columns_rows_and_a_scalar(self, sink: ClickHouseSink) -> None:
        result = sink.query("SELECT 1 AS a, 'x' AS b")
        assert result.columns == ["a", "b"]
        assert result.rows == [(1, "x")]
        assert result.scalar() == 1
        assert sink.query("SELECT 1 WHERE 0").scalar() is None

    def test_parameters_are_bound_as_literals(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [(f"e{i}", k, i, AT, "t", 0, i) for i, k in enumerate(["a", "it's", "c", "d"])])
        sql = "SELECT aggregate_id FROM contract_events WHERE aggregate_id IN %(keys)s ORDER BY aggregate_id"
        assert sink.rows(sql, {"keys": ["it's", "d", "missing"]}) == [("d",), ("it's",)]
        evil = "a' OR 1 = 1 --"
        assert sink.rows("SELECT count() FROM contract_events WHERE aggregate_id = %(k)s", {"k": evil}) == [(0,)]

    # ---- read-only queries -------------------------------------------------------------------

    def test_a_read_only_query_reads(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0), ("e2", "b", 2, AT, "t", 0, 1)])
        result = sink.read_only_query("SELECT aggregate_id, version FROM contract_events ORDER BY version")
        assert result.as_dicts() == [{"aggregate_id": "a", "version": 1}, {"aggregate_id": "b", "version": 2}]
        sql = "WITH %(k)s AS k SELECT count() FROM contract_events WHERE aggregate_id = k"
        assert sink.read_only_query(sql, {"k": "b"}).scalar() == 1
        # A parameter that reads like SQL is a literal: neither refused nor run.
        assert sink.read_only_query(sql, {"k": "a'; DROP TABLE contract_events; --"}).scalar() == 0
        assert sink.read_only_query("SELECT sum(number) FROM numbers(10)").scalar() == 45

    def test_the_read_only_session_leaves_the_writer_writable(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        assert sink.read_only_query("SELECT count() FROM contract_events").scalar() == 0
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0)])
        sink.create(AGGREGATES)
        assert sink.read_only_query("SELECT count() FROM contract_events").scalar() == 1

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO contract_events SELECT * FROM contract_events",
            "INSERT INTO FUNCTION file('{tmp}/insert.csv', 'CSV', 'x UInt8') VALUES (1)",
            "SELECT event_id FROM contract_events INTO OUTFILE '{tmp}/out.csv'",
            "DROP TABLE contract_events",
            "TRUNCATE TABLE contract_events",
            "ALTER TABLE contract_events DELETE WHERE 1",
            "CREATE TABLE contract_new (x UInt8) ENGINE = Memory",
            "RENAME TABLE contract_events TO contract_gone",
            "SET readonly = 0",
            "SELECT 1 SETTINGS readonly = 0",
            "SELECT 1; DROP TABLE contract_events",
            "SELECT 1 /* ; */; TRUNCATE TABLE contract_events",
            "SELECT * FROM file('/etc/passwd', 'LineAsString')",
            "SELECT count() FROM (SELECT * FROM file('{tmp}/secret.txt', 'LineAsString'))",
            "SELECT file('/etc/passwd')",
            "SELECT * FROM url('http://127.0.0.1:1/x.csv', 'CSV', 'x UInt8')",
            "SELECT * FROM remote('127.0.0.1:1', system.one)",
            "SELECT * FROM s3('http://127.0.0.1:1/b/x.csv', 'CSV', 'x UInt8')",
        ],
    )
    def test_a_write_or_an_escape_is_rejected_and_changes_nothing(
        self, sink: ClickHouseSink, tmp_path: Path, sql: str
    ) -> None:
        files = tmp_path / "files"
        files.mkdir()
        (files / "secret.txt").write_text("secret\n")
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0)])
        before = _snapshot(sink)
        with pytest.raises(QueryRejected):
            sink.read_only_query(sql.format(tmp=files))
        assert _snapshot(sink) == before == {"contract_events": 1}
        assert [p.name for p in files.iterdir()] == ["secret.txt"]
        assert sink.read_only_query("SELECT getSetting('readonly')").scalar() in (1, 2)

    def test_the_session_refuses_writes_even_past_the_guard(
        self, sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Defence in depth: the reader's session is read-only on its own."""
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "t", 0, 0)])
        monkeypatch.setattr(projections.sink, "check_read_only", lambda sql, functions=(): None)
        writes = [
            "INSERT INTO contract_events SELECT * FROM contract_events",
            "DROP TABLE contract_events",
            "TRUNCATE TABLE contract_events",
            "CREATE TABLE contract_new (x UInt8) ENGINE = Memory",
        ]
        for sql in writes:
            with pytest.raises(QueryError, match="READONLY"):
                sink.read_only_query(sql)
        assert _snapshot(sink) == {"contract_events": 1}

    def test_a_syntax_error_is_a_query_error_with_the_engines_message(self, sink: ClickHouseSink) -> None:
        with pytest.raises(QueryError) as caught:
            sink.read_only_query("SELECT (1")
        assert "Syntax error" in str(caught.value)
        assert "SYNTAX_ERROR" in str(caught.value)
        assert "\n" not in str(caught.value)  # one line, for the API's error body

    def test_an_unknown_table_is_a_query_error(self, sink: ClickHouseSink) -> None:
        with pytest.raises(QueryError, match="UNKNOWN_TABLE"):
            sink.read_only_query("SELECT * FROM contract_missing")

    def test_an_unbound_parameter_is_a_query_error(self, sink: ClickHouseSink) -> None:
        with pytest.raises(QueryError, match="cannot bind parameters"):
            sink.read_only_query("SELECT %(x)s", {"y": 1})

    # ---- resume positions --------------------------------------------------------------------

    def test_an_empty_table_has_no_positions(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        assert sink.max_offsets(EVENTS) == {}

    def test_max_offsets_is_the_highest_offset_per_topic_and_partition(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "orders", 0, 5), ("e2", "a", 2, AT, "orders", 0, 3)])
        sink.insert(EVENTS, [("e3", "a", 3, AT, "orders", 1, 0), ("e4", "a", 4, AT, "payments", 0, 2**40)])
        sink.insert(EVENTS, [("e5", "a", 5, AT, "orders", 0, 4), ("e6", "a", 6, AT, "payments", 7, 11)])
        offsets = sink.max_offsets(EVENTS)
        assert offsets == {("orders", 0): 5, ("orders", 1): 0, ("payments", 0): 2**40, ("payments", 7): 11}
        assert all(type(p) is int and type(o) is int for (_, p), o in offsets.items())

    def test_positions_are_per_table(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.create(AGGREGATES)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "orders", 0, 9)])
        sink.insert(AGGREGATES, [("a", 1, "orders", 0, 4)])
        assert sink.max_offsets(EVENTS) == {("orders", 0): 9}
        assert sink.max_offsets(AGGREGATES) == {("orders", 0): 4}
        sink.create(EVENTS.renamed(REBUILD))
        assert sink.max_offsets(EVENTS.renamed(REBUILD)) == {}

    def test_positions_survive_a_reopen(self, sink: ClickHouseSink) -> None:
        sink.create(EVENTS)
        sink.insert(EVENTS, [("e1", "a", 1, AT, "orders", 2, 17)])
        with _restarted(sink) as again:
            assert again.max_offsets(EVENTS) == {("orders", 2): 17}

    # ---- the rebuild swap --------------------------------------------------------------------

    def _build(self, sink: ClickHouseSink, suffix: str, tag: str) -> None:
        """A complete set (both tables, the view and its target, the parked table) whose rows say `tag`."""
        sink.create(EVENTS.renamed(suffix))
        sink.create(AGGREGATES.renamed(suffix))
        sink.create(COUNTS.target.renamed(suffix))
        sink.command(COUNTS.ddl(suffix))
        sink.create(PARKED.renamed(suffix))
        sink.insert(EVENTS.renamed(suffix), [(f"{tag}-{i}", tag, i, AT, "t", 0, i) for i in range(3)])
        sink.insert(AGGREGATES.renamed(suffix), [(tag, 2, "t", 0, 2)])
        sink.insert(PARKED.renamed(suffix), [(f"{tag} failed", AT, "t", 0, 3)])

    def _live(self, sink: ClickHouseSink) -> dict[str, list[Any]]:
        """What the live objects hold: the tag of every row (and the view target's sum)."""
        return {
            EVENTS.name: sink.rows(f"SELECT aggregate_id, count() FROM {EVENTS.name} GROUP BY aggregate_id"),
            AGGREGATES.name: sink.rows(f"SELECT aggregate_id FROM {AGGREGATES.name}"),
            COUNTS.target.name: sink.rows(f"SELECT aggregate_id, sum(events) FROM {COUNTS.target.name} GROUP BY 1"),
            PARKED.name: sink.rows(f"SELECT error FROM {PARKED.name}"),
        }

    @staticmethod
    def _set(tag: str) -> dict[str, list[Any]]:
        return {
            EVENTS.name: [(tag, 3)],
            AGGREGATES.name: [(tag,)],
            COUNTS.target.name: [(tag, 3)],
            PARKED.name: [(f"{tag} failed",)],
        }

    @staticmethod
    def _leftovers(sink: ClickHouseSink) -> list[str]:
        return sorted(n for n in _tables(sink) if n.endswith((REBUILD, OLD)) or n.startswith("_swap_"))

    def test_promote_swaps_the_rebuilt_set_in(self, sink: ClickHouseSink) -> None:
        self._build(sink, "", "old")
        self._build(sink, REBUILD, "new")
        assert self._live(sink) == self._set("old")
        promote(sink, ContractProjection())
        assert self._live(sink) == self._set("new")
        assert self._leftovers(sink) == []
        assert COUNTS.name not in _tables(sink), "promote drops the views; the next start() recreates them"
        assert recover(sink, ContractProjection()) is False

    def test_the_recreated_view_feeds_the_promoted_target(self, sink: ClickHouseSink) -> None:
        self._build(sink, "", "old")
        self._build(sink, REBUILD, "new")
        promote(sink, ContractProjection())
        sink.command(COUNTS.ddl())
        sink.insert(EVENTS, [("late", "new", 9, AT, "t", 0, 9)])
        assert sink.rows(f"SELECT sum(events) FROM {COUNTS.target.name}") == [(4,)]
        assert sink.max_offsets(EVENTS) == {("t", 0): 9}

    def test_promote_fills_a_table_the_live_set_never_had(self, sink: ClickHouseSink) -> None:
        self._build(sink, "", "old")
        sink.drop(PARKED)  # most projections never park: the live set has no parked table
        self._build(sink, REBUILD, "new")
        promote(sink, ContractProjection())
        assert self._live(sink) == self._set("new")
        assert self._leftovers(sink) == []

    def test_a_crash_after_the_marker_is_finished_by_recover(
        self, sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self._build(sink, "", "old")
        self._build(sink, REBUILD, "new")
        _crash_at(sink, monkeypatch, lambda _, sql: sql.startswith("RENAME TABLE"))
        with pytest.raises(Crash):
            promote(sink, ContractProjection())
        assert "_swap_contract" in _tables(sink)
        assert self._live(sink) == self._set("old"), "the crash came before any rename"
        with _restarted(sink) as again:
            assert recover(again, ContractProjection()) is False
            assert self._live(again) == self._set("new")
            assert self._leftovers(again) == []

    def test_a_crash_before_the_marker_keeps_the_old_set_and_the_rebuild(
        self, sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self._build(sink, "", "old")
        self._build(sink, REBUILD, "new")
        _crash_at(sink, monkeypatch, lambda _, sql: "_swap_" in sql)
        with pytest.raises(Crash):
            promote(sink, ContractProjection())
        with _restarted(sink) as again:
            assert recover(again, ContractProjection()) is True, "the unfinished rebuild waits to be resumed"
            assert self._live(again) == self._set("old")
            rebuilt = again.rows(f"SELECT DISTINCT aggregate_id FROM {EVENTS.name}{REBUILD}")
            assert rebuilt == [("new",)]

    def test_a_crash_at_any_step_of_promote_leaves_one_complete_set(
        self, sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Crash at the 1st, 2nd, ... command of `promote` until it runs through; after `recover`
        (and the resumed promote, when the crash came before the commit) the new set is live."""
        projection = ContractProjection()
        step = 1
        while True:
            monkeypatch.undo()
            for name in list(_tables(sink)):
                sink.command(f"DROP TABLE IF EXISTS {name}")
            self._build(sink, "", "old")
            self._build(sink, REBUILD, "new")
            _crash_at(sink, monkeypatch, _nth(step))
            try:
                promote(sink, projection)
            except Crash:
                pass
            else:
                break
            with _restarted(sink) as again:
                committed = "_swap_contract" in _tables(again)
                pending = recover(again, projection)
                assert pending is not committed, f"step {step}"
                assert self._live(again) == self._set("new" if committed else "old"), f"step {step}"
                if pending:
                    promote(again, projection)
                assert self._live(again) == self._set("new"), f"step {step}"
                assert self._leftovers(again) == [], f"step {step}"
            step += 1
        assert step > 8, "promote ran through too early: the crash never hit the middle of the swap"
        assert self._live(sink) == self._set("new")

    def test_recover_without_a_rebuild_changes_nothing(self, sink: ClickHouseSink) -> None:
        self._build(sink, "", "old")
        before = _snapshot(sink)
        assert recover(sink, ContractProjection()) is False
        assert _snapshot(sink) == before
        assert self._live(sink) == self._set("old")

    def test_discard_rebuild_drops_the_rebuilt_set_only(self, sink: ClickHouseSink) -> None:
        self._build(sink, "", "old")
        self._build(sink, REBUILD, "new")
        assert recover(sink, ContractProjection()) is True
        discard_rebuild(sink, ContractProjection())
        assert self._leftovers(sink) == []
        assert set(_tables(sink)) == {EVENTS.name, AGGREGATES.name, COUNTS.target.name, COUNTS.name, PARKED.name}
        assert self._live(sink) == self._set("old")
        assert recover(sink, ContractProjection()) is False

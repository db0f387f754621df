"""The public analytics query API is read-only: every bypass is refused with QueryRejected, and
afterwards no table and no file has changed. Bad SQL raises QueryError, never a Ray error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from choreography.errors import QueryError, QueryRejected
from shop.messages import OrderLine, PlaceOrder


def _place_orders(system: Any, settings: Any, n: int = 3) -> None:
    events = []
    for i in range(n):
        events += system.submit(
            PlaceOrder(
                order_id=f"ro-{i}",
                customer_id="c-1",
                lines=(OrderLine(sku="SKU-1", quantity=1 + i, unit_price_cents=100),),
            )
        )
    for name, spec in settings.projections.items():
        if "order-events" in spec.topics:
            system.wait_for(events, projection=name, timeout=60)


def _table_counts(system: Any) -> dict[str, Any]:
    """Row count of every table, read through the host's own (internal, writable) engine client."""
    host = system.projection_hosts["orders"]

    def run(sql: str) -> Any:
        try:
            return ray.get(host.__ray_call__.remote(lambda self: self.sink.rows(sql)), timeout=60)
        except Exception as exc:
            return f"error: {type(exc).__name__}"

    tables = run("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
    if isinstance(tables, str):
        return {"tables": tables}
    return {name: run(f"SELECT count() FROM `{name}`") for (name,) in tables}


def _bypasses(target: Path) -> list[str]:
    out = target / "out.csv"
    return [
        "DROP TABLE orders",
        "TRUNCATE TABLE events_raw",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SELECT order_id FROM orders INTO OUTFILE '{out}'",
        f"SELECT 1 InTo OuTfIlE '{target / 'case.csv'}'",
        f"INSERT INTO FUNCTION file('{target / 'insert.csv'}', 'CSV', 'x UInt8') VALUES (1)",
        "INSERT INTO orders SELECT * FROM orders",
        # An unreachable url() or s3() blocks the engine for minutes; these settings make the
        # unguarded engine fail fast (the guard refuses both the functions and SETTINGS).
        "SELECT * FROM url('http://127.0.0.1:1/x.csv', 'CSV', 'x UInt8') SETTINGS http_max_tries = 1",
        "SELECT * FROM s3('http://127.0.0.1:1/b/x.csv', 'CSV', 'x UInt8') SETTINGS s3_retry_attempts = 0",
        "SELECT * FROM remote('127.0.0.1:1', system.one)",
        "SELECT * FROM executable('sh', 'CSV', 'x UInt8')",
        "SELECT 1; DROP TABLE orders",
        "SELECT 1 SETTINGS readonly=0",
        "SET readonly = 0",
        "/* hello */ DROP TABLE orders",
        "-- hello\n DROP TABLE order_lines",
        "SELECT 1 /*; DROP TABLE x */; DROP TABLE orders",
        "sElEcT 1; dRoP tAbLe customer_orders",
        "SELECT file('/etc/passwd')",
        "SELECT count() FROM (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
        "SELECT * FROM orders AS o JOIN file('/etc/passwd', 'LineAsString') AS f ON 1",
        "SELECT dictGet('ext', 'x', 1)",
        "SELECT * FROM dictionary('ext')",
        "SYSTEM DROP MARK CACHE",
        "KILL QUERY WHERE 1",
        "OPTIMIZE TABLE orders FINAL",
        "ALTER TABLE orders DELETE WHERE 1",
        "DETACH TABLE orders",
        "ATTACH TABLE orders",
        "RENAME TABLE orders TO orders_gone",
        "EXCHANGE TABLES orders AND order_lines",
        "USE system",
        "GRANT ALL ON *.* TO default",
        f"BACKUP TABLE orders TO File('{target / 'backup'}')",
        "CREATE TABLE evil (x UInt8) ENGINE = Memory",
        "SELECT $$x$$, file('/etc/passwd')",
        "SELECT `file`('/etc/passwd')",
    ]


def test_query_api_refuses_every_bypass_and_changes_nothing(make_settings, start_system, tmp_path: Path) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings, policies=False, metrics=False)
    _place_orders(system, settings)
    target = tmp_path / "escape"
    target.mkdir()
    before = _table_counts(system)
    assert before.get("orders") == [(3,)], before

    outcomes: dict[str, BaseException | None] = {}
    for sql in _bypasses(target):
        try:
            system.query(sql)
            outcomes[sql] = None
        except Exception as exc:
            outcomes[sql] = exc

    assert sorted(p.name for p in target.iterdir()) == []
    assert _table_counts(system) == before
    wrong = {sql: type(exc).__name__ for sql, exc in outcomes.items() if not isinstance(exc, QueryRejected)}
    assert wrong == {}

    # Data that merely looks dangerous is fine: string literals, comments, quoted identifiers.
    assert system.query("SELECT 'a; DROP TABLE orders -- x' AS s").rows == [("a; DROP TABLE orders -- x",)]
    assert system.query("SELECT count() /* DROP TABLE orders; */ FROM orders FINAL -- ; DROP\n").scalar() == 3
    assert system.query("sElEcT count() FROM numbers(4);").scalar() == 4
    assert system.query("SELECT status, count() FROM orders FINAL GROUP BY status").rows == [("reserving", 3)]
    assert [r[0] for r in system.query("SHOW TABLES").rows].count("orders") == 1
    assert system.query("DESCRIBE TABLE orders").rows
    assert system.query("EXPLAIN SELECT 1").rows
    assert len(system.saga("ro-1").rows) == 1


def test_bad_query_raises_query_error_with_clickhouse_message(make_settings, start_system) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings, policies=False, metrics=False)
    with pytest.raises(Exception) as info:  # its type is the point
        system.query("SELECT * FROM no_such_table")
    assert "RayTaskError" not in type(info.value).__name__
    assert "no_such_table" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, QueryError)
    with pytest.raises(QueryError, match="Syntax error"):
        system.query("SELECT FROM WHERE")

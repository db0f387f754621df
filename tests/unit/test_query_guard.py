"""The read-only SQL guard: an allow-list of statements, no writes, no functions that reach outside."""

from __future__ import annotations

import itertools
import random

import pytest

from choreography.errors import QueryRejected
from projections.readonly import KNOWN_TABLE_FUNCTIONS, SAFE_TABLE_FUNCTIONS, check_read_only, tokenize

ALLOWED = [
    "SELECT 1",
    "select 1;",
    "SELECT 1 ;  -- trailing comment",
    "sElEcT count() FROM orders FINAL",
    "SELECT status, count() FROM orders FINAL WHERE status != 'confirmed' GROUP BY status ORDER BY 2 DESC LIMIT 5",
    "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "SELECT 'DROP TABLE orders; SELECT * FROM file(''/etc/passwd'')' AS s",
    "SELECT 'a\\'; DROP TABLE orders' AS s",
    'SELECT "into", `drop` FROM t',
    "SELECT count() /* ; DROP TABLE orders */ FROM orders",
    "SELECT 1 -- ; DROP TABLE orders",
    "SELECT * FROM numbers(10)",
    "SELECT * FROM values('x UInt8', 1, 2)",
    "SELECT * FROM generateRandom('a UInt8') LIMIT 1",
    "SELECT format('{} {}', 'a', 'b')",
    "SELECT * FROM events_raw WHERE correlation_id = %(id)s ORDER BY occurred_at, _offset",
    "SELECT * FROM events_raw WHERE correlation_id = {id:String}",
    "SELECT toStartOfMinute(occurred_at) AS m, sum(net) FROM sales_per_minute GROUP BY m",
    "SELECT arrayMap(x -> x * 2, [1, 2, 3]), 1::UInt8, a ? b : c, a || b",
    "SELECT name FROM system.tables WHERE database = currentDatabase()",
    "SELECT * FROM orders AS o JOIN order_lines AS l ON o.order_id = l.order_id",
    "SELECT * FROM orders WHERE EXISTS (SELECT 1)",
    "SHOW TABLES",
    "SHOW CREATE TABLE orders",
    "DESCRIBE TABLE orders",
    "DESC orders",
    "EXISTS TABLE orders",
    "EXPLAIN SELECT 1",
    "EXPLAIN PLAN header = 1, actions = 1 SELECT 1",
    "EXPLAIN AST SELECT 1",
    "SELECT 'é ü 中' AS unicode_in_a_literal",
    "SELECT `fi le` FROM t",
    "SELECT 1e5, 0x1F, 1.5",
]

REJECTED = [
    "",
    " ; ",
    "-- only a comment",
    "DROP TABLE orders",
    "drop table orders",
    "TRUNCATE TABLE events_raw",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT `file`('/etc/passwd')",
    "SELECT \"file\"('/etc/passwd')",
    "SELECT FILE('/etc/passwd')",
    "SELECT file /* gap */ ('/etc/passwd')",
    "SELECT 1file('/etc/passwd')",
    "SELECT 1 INTO OUTFILE '/tmp/x.csv'",
    "SELECT 1 InTo OuTfIlE '/tmp/x.csv'",
    "SELECT 1 INTO OUTFILE '/tmp/x.csv' FORMAT CSV",
    "INSERT INTO FUNCTION file('/tmp/x.csv', 'CSV', 'x UInt8') VALUES (1)",
    "INSERT INTO orders SELECT * FROM orders",
    "SELECT * FROM url('http://example.com/x.csv', 'CSV', 'x UInt8')",
    "SELECT * FROM s3('http://example.com/x.csv')",
    "SELECT * FROM s3Cluster('c', 'http://example.com/x.csv')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1:9440', system.one)",
    "SELECT * FROM cluster('c', system.one)",
    "SELECT * FROM executable('x.sh', 'CSV', 'x UInt8')",
    "SELECT * FROM hdfs('hdfs://h/x', 'CSV', 'x UInt8')",
    "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('h:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM jdbc('jdbc:x', 't')",
    "SELECT * FROM odbc('dsn', 't')",
    "SELECT * FROM sqlite('/tmp/x.db', 't')",
    "SELECT * FROM mongodb('h', 'db', 'c', 'u', 'p', 'x UInt8')",
    "SELECT * FROM azureBlobStorage('c', 'x')",
    "SELECT * FROM input('x UInt8')",
    "SELECT * FROM python('x')",
    "SELECT * FROM dictionary('d')",
    "SELECT dictGet('d', 'x', 1)",
    "SELECT dictGetOrDefault('d', 'x', 1, 0)",
    "SELECT dictHas('d', 1)",
    "SELECT count() FROM (SELECT * FROM file('/etc/passwd'))",
    "SELECT * FROM orders JOIN file('/etc/passwd', 'LineAsString') AS f ON 1",
    "SELECT * FROM orders WHERE order_id IN (SELECT line FROM url('http://x', 'LineAsString'))",
    "SELECT 1; DROP TABLE orders",
    "SELECT 1; SELECT 2",
    "SELECT 1 /*; DROP TABLE x */; DROP TABLE orders",
    "/* hello */ DROP TABLE orders",
    "-- hello\n DROP TABLE orders",
    "-- hello\r DROP TABLE orders",
    "SELECT 1 /* /* nested */ DROP TABLE orders */",
    "SELECT 1 /* unterminated",
    "SELECT 'unterminated",
    "SELECT 1 # DROP",
    "SELECT $$x$$, file('/etc/passwd')",
    "SELECT $x$ ' $x$, file('/etc/passwd') --'",
    "SELECT 1\\G",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_threads = 1",
    "SET readonly = 0",
    "USE system",
    "SYSTEM DROP DNS CACHE",
    "KILL QUERY WHERE 1",
    "OPTIMIZE TABLE orders FINAL",
    "ALTER TABLE orders DELETE WHERE 1",
    "ALTER TABLE orders UPDATE status = 'x' WHERE 1",
    "DELETE FROM orders WHERE 1",
    "ATTACH TABLE orders",
    "DETACH TABLE orders",
    "RENAME TABLE orders TO x",
    "EXCHANGE TABLES orders AND order_lines",
    "GRANT ALL ON *.* TO default",
    "REVOKE ALL ON *.* FROM default",
    "BACKUP TABLE orders TO File('/tmp/b')",
    "RESTORE TABLE orders FROM File('/tmp/b')",
    "CREATE TABLE x (a UInt8) ENGINE = Memory",
    "CREATE DICTIONARY d (x UInt8) PRIMARY KEY x SOURCE(FILE(path '/etc/passwd')) LAYOUT(FLAT()) LIFETIME(0)",
    "CHECK TABLE orders",
    "UNDROP TABLE orders",
    "EXPLAIN AST CREATE TABLE t ENGINE = Memory AS SELECT 1",
    "EXPLAIN DROP TABLE orders",
    "(DROP TABLE orders)",
    "(SHOW TABLES)",
    "SELECT 1\u00a0FROM t",
    "SELECT 1 FROM t\u2028",
    "SELECT * FROM merge('default', '.*')",
    "SELECT * FROM loop(numbers(2))",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_reads_are_allowed(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize("sql", REJECTED)
def test_writes_and_escapes_are_rejected(sql: str) -> None:
    with pytest.raises(QueryRejected):
        check_read_only(sql)


def test_every_non_generator_table_function_is_rejected() -> None:
    for name in sorted(KNOWN_TABLE_FUNCTIONS - SAFE_TABLE_FUNCTIONS):
        with pytest.raises(QueryRejected):
            check_read_only(f"SELECT * FROM {name}('x')")


def test_the_engine_list_extends_the_built_in_one() -> None:
    check_read_only("SELECT * FROM brandNewLake('x')")
    with pytest.raises(QueryRejected, match="brandNewLake"):
        check_read_only("SELECT * FROM brandNewLake('x')", table_functions=["brandNewLake"])


def test_rejection_says_why() -> None:
    with pytest.raises(QueryRejected, match="one statement"):
        check_read_only("SELECT 1; SELECT 2")
    with pytest.raises(QueryRejected, match=r"OUTFILE|INTO"):
        check_read_only("SELECT 1 INTO OUTFILE 'x'")
    with pytest.raises(QueryRejected, match=r"file\(\)"):
        check_read_only("SELECT file('x')")
    assert str(QueryRejected("x")) == "query rejected: x"


def test_tokenizer_strips_comments_and_keeps_literals_whole() -> None:
    tokens = tokenize("SELECT 'a;''b' /* c */ -- d\n, `e``f`")
    assert [(t.text, t.kind) for t in tokens] == [
        ("SELECT", "word"), ("a;'b", "string"), (",", "punct"), ("e`f", "quoted"),
    ]  # fmt: skip


def test_random_splices_of_a_write_into_a_read_are_rejected() -> None:
    """Property-style: wrap a harmful fragment in random case, whitespace and comments, and
    splice it into an allowed read; the guard must refuse every variant."""
    rng = random.Random(7)
    harmful = [
        "; DROP TABLE orders",
        " INTO OUTFILE 'x'",
        " SETTINGS readonly=0",
        ", file('x')",
        ", dictGet('d', 'a', 1)",
    ]
    reads = ["SELECT 1", "SELECT count() FROM orders FINAL", "WITH 1 AS x SELECT x"]
    noise = [" ", "\n", "\t", " /* ; */ ", " -- '\n"]

    def scramble(text: str) -> str:
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)

    for read, bad in itertools.product(reads, harmful):
        for _ in range(40):
            glue = rng.choice(noise)
            sql = scramble(read) + glue + scramble(bad).replace(" ", rng.choice(noise), 1)
            with pytest.raises(QueryRejected):
                check_read_only(sql)

"""An allow-list guard for analytics SQL: one read-only statement, no writes, no outside access."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from projections.errors import QueryRejected

FIRST_WORDS = frozenset({"select", "with", "show", "describe", "desc", "explain", "exists"})
"""Statements the query API runs. Everything else (DDL, DML, SET, USE, SYSTEM, KILL...) is refused."""

DENIED_WORDS = frozenset(
    {
        "insert", "into", "outfile", "settings", "drop", "truncate", "alter", "attach", "detach", "rename",
        "exchange", "grant", "revoke", "optimize", "kill", "backup", "restore", "delete", "update", "undrop",
    }
)  # fmt: skip
"""Keywords that never belong to a read: refused anywhere outside literals and quoted identifiers."""

SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generaterandom", "generateseries", "generate_series",
        "format",
    }
)  # fmt: skip
"""Table functions that only generate data in memory (`format` is also a common scalar function).
Every other table function is refused."""

KNOWN_TABLE_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "arrowstream", "azureBlobStorage", "azureBlobStorageCluster", "bigquery", "cluster", "clusterAllReplicas",
        "cosn", "deltaLake", "deltaLakeAzure", "deltaLakeAzureCluster", "deltaLakeCluster", "deltaLakeLocal",
        "deltaLakeS3", "deltaLakeS3Cluster", "dictionary", "eval", "executable", "file", "fileCluster", "filesystem",
        "format", "fuzzJSON", "fuzzQuery", "gcs", "generateRandom", "generateSeries", "generate_series", "hdfs",
        "hdfsCluster", "hudi", "hudiCluster", "iceberg", "icebergAzure", "icebergAzureCluster", "icebergCluster",
        "icebergHDFS", "icebergHDFSCluster", "icebergLocal", "icebergLocalCluster", "icebergS3", "icebergS3Cluster",
        "input", "jdbc", "loop", "merge", "mergeTreeAnalyzeIndexes", "mergeTreeAnalyzeIndexesUUID",
        "mergeTreeCodecBlockCounts", "mergeTreeIndex", "mergeTreeProjection", "mergeTreeTextIndex", "mongodb", "mysql",
        "null", "numbers", "numbers_mt", "odbc", "oss", "paimon", "paimonAzure", "paimonAzureCluster", "paimonCluster",
        "paimonHDFS", "paimonHDFSCluster", "paimonLocal", "paimonS3", "paimonS3Cluster", "postgresql", "primes",
        "prometheusQuery", "prometheusQueryRange", "python", "redis", "remote", "remoteSecure", "s3", "s3Cluster",
        "sqlite", "SQLStandardValues", "timeSeriesData", "timeSeriesMetricFamilies", "timeSeriesMetrics",
        "timeSeriesSamples", "timeSeriesSelector", "timeSeriesTags", "url", "urlCluster", "values", "view",
        "viewExplain", "viewIfPermitted", "ytsaurus", "zeros", "zeros_mt", "executablePool", "hive", "azure",
        "deltaLakeGCS",
    )
)  # fmt: skip
"""Table functions of ClickHouse 26.x (system.table_functions); the sink adds the engine's live list."""

DENIED_FUNCTIONS = frozenset({"file", "catboostevaluate", "modelevaluate", "evalmlmethod"})
"""Scalar functions that reach outside the database (`file` reads any file, even in readonly mode)."""

DENIED_PREFIXES = ("dict",)
"""dictGet*, dictHas... read dictionaries, whose sources may be files, URLs or other databases."""

EXPLAIN_KINDS = frozenset({"ast", "syntax", "query", "tree", "plan", "pipeline", "estimate"})
ALLOWED_PUNCTUATION = frozenset("()[]{},.:;+-*/%<>=!?|&^~")
WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Token:
    text: str
    kind: str  # "word" (bare word or number), "quoted" (quoted identifier), "string", "punct"


def tokenize(sql: str) -> list[Token]:
    """Split SQL into tokens, dropping comments. Anything ambiguous (nested comments, heredocs,
    `#` comments, non-ASCII outside literals, unterminated literals) is refused, not guessed."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in " \t\n\r\f\v":
            i += 1
        elif sql.startswith("--", i):
            # ClickHouse ends a line comment at \n; ending it at \r too only makes us see more.
            while i < n and sql[i] not in "\r\n":
                i += 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise QueryRejected("unterminated comment")
            if "/*" in sql[i + 2 : end]:
                raise QueryRejected("nested comments are not allowed")
            i = end + 2
        elif c in "'\"`":
            text, i = _quoted(sql, i)
            tokens.append(Token(text, "string" if c == "'" else "quoted"))
        elif c.isascii() and (c.isalnum() or c == "_"):
            match = WORD.match(sql, i)
            assert match is not None
            tokens.append(Token(match.group(), "word"))
            i = match.end()
        elif c in ALLOWED_PUNCTUATION:
            tokens.append(Token(c, "punct"))
            i += 1
        else:
            raise QueryRejected(f"character {c!r} is not allowed outside string literals")
    return tokens


def _quoted(sql: str, start: int) -> tuple[str, int]:
    """A quoted literal or identifier from `start`: backslash escapes and doubled quotes."""
    quote = sql[start]
    out: list[str] = []
    i = start + 1
    while i < len(sql):
        c = sql[i]
        if c == "\\" and i + 1 < len(sql):
            out.append(sql[i + 1])
            i += 2
        elif c == quote and sql.startswith(quote * 2, i):
            out.append(quote)
            i += 2
        elif c == quote:
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise QueryRejected("unterminated string literal or quoted identifier")


def check_read_only(sql: str, table_functions: Iterable[str] = ()) -> None:
    """Raise QueryRejected unless `sql` is one read-only statement that stays inside the database.

    `table_functions` adds the engine's own list of table functions to the built-in one; any
    table function outside SAFE_TABLE_FUNCTIONS is refused."""
    tokens = tokenize(sql)
    while tokens and tokens[-1].text == ";" and tokens[-1].kind == "punct":
        tokens.pop()
    if not tokens:
        raise QueryRejected("empty query")
    if any(t.kind == "punct" and t.text == ";" for t in tokens):
        raise QueryRejected("only one statement per query")
    _check_statement(tokens)
    denied_tables = (KNOWN_TABLE_FUNCTIONS | {f.lower() for f in table_functions}) - SAFE_TABLE_FUNCTIONS
    for i, tok in enumerate(tokens):
        if tok.kind not in ("word", "quoted"):
            continue
        # ClickHouse may lex `1file` as a number and a word: look at the word without leading digits.
        name = tok.text.lower() if tok.kind == "quoted" else tok.text.lower().lstrip("0123456789")
        if tok.kind == "word" and name in DENIED_WORDS:
            raise QueryRejected(f"{name.upper()} is not allowed in a read-only query")
        is_call = i + 1 < len(tokens) and tokens[i + 1].text == "(" and tokens[i + 1].kind == "punct"
        if is_call and (name in denied_tables or name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES)):
            raise QueryRejected(f"function {tok.text}() reaches outside the database and is not allowed")


def _check_statement(tokens: list[Token]) -> None:
    i = 0
    while i < len(tokens) and tokens[i].text == "(" and tokens[i].kind == "punct":
        i += 1
    first = tokens[i].text.lower() if i < len(tokens) and tokens[i].kind == "word" else ""
    if first not in FIRST_WORDS or (i > 0 and first not in ("select", "with")):
        shown = tokens[i].text if i < len(tokens) else ""
        raise QueryRejected(f"only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS are allowed, not {shown!r}")
    if first == "explain":
        _check_explain(tokens, i + 1)


def _check_explain(tokens: list[Token], start: int) -> None:
    """EXPLAIN [kind] [option = value, ...] SELECT ...: what it explains must be a read too."""
    j = start
    while j < len(tokens) and tokens[j].text.lower() not in ("select", "with", "("):
        tok = tokens[j]
        word = tok.text.lower()
        is_option = j + 1 < len(tokens) and tokens[j + 1].text == "="
        is_value = tokens[j - 1].text == "=" and (tok.kind == "word" or tok.kind == "string")
        if not (word in EXPLAIN_KINDS or word in ("=", ",") or is_option or is_value):
            raise QueryRejected("EXPLAIN is only allowed for SELECT queries")
        j += 1
    if j == len(tokens):
        raise QueryRejected("EXPLAIN is only allowed for SELECT queries")


__all__ = ["QueryRejected", "check_read_only", "tokenize"]

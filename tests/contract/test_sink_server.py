"""The sink contract against a ClickHouse server: opt-in, with CHOREO_TEST_CLICKHOUSE_URL set.

Each test creates its own uniquely named database on the server, points the sink's DSN at it and
drops it afterwards, so runs never see each other's tables."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
import pytest

from projections.sink import ClickHouseSink
from tests.contract.sink_contract import SinkContract

URL = os.environ.get("CHOREO_TEST_CLICKHOUSE_URL", "")


def with_database(url: str, database: str) -> str:
    """`url` with its database (the DSN's path) replaced by `database`; query options are kept."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


if not URL:
    pytest.skip(
        "opt-in backend: set CHOREO_TEST_CLICKHOUSE_URL (e.g. clickhouse://default:@localhost:8123/) to run it",
        allow_module_level=True,
    )


class TestServerSink(SinkContract):
    @contextmanager
    def fresh_sink(self, tmp_path: Path) -> Iterator[ClickHouseSink]:
        database = f"choreo_contract_{uuid.uuid4().hex[:12]}"
        admin = clickhouse_connect.get_client(dsn=URL)
        try:
            admin.command(f"CREATE DATABASE {database}")
            sink = ClickHouseSink(with_database(URL, database))
            try:
                yield sink
            finally:
                sink.close()
        finally:
            admin.command(f"DROP DATABASE IF EXISTS {database} SYNC")
            admin.close()

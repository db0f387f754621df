"""The sink contract against the embedded engine (chDB through clickhouse-connect's chdb:// DSN)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from projections.sink import ClickHouseSink
from tests.contract.sink_contract import SinkContract


class TestEmbeddedSink(SinkContract):
    """Each test gets its own engine directory under tmp_path, like the integration tests.

    chDB runs one engine path per process at a time: the sink is closed before the next test
    opens another path."""

    @contextmanager
    def fresh_sink(self, tmp_path: Path) -> Iterator[ClickHouseSink]:
        sink = ClickHouseSink(f"chdb://{tmp_path / 'clickhouse'}")
        try:
            yield sink
        finally:
            sink.close()

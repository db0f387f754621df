"""`otel_traces` (projections/otel_traces.py) has the layout of the OpenTelemetry Collector's
ClickHouse exporter, checked on the real engine against the pinned copy of that exporter's
columns (tests/contract/otel_traces_upstream.sql), and takes the rows the live-span exporter makes."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from actors.live_spans import otel_row
from projections.otel_traces import OTEL_TRACES
from projections.sink import ClickHouseSink

PINNED = Path(__file__).with_name("otel_traces_upstream.sql")


def pinned() -> tuple[list[tuple[str, str]], list[str]]:
    lines = [line.strip() for line in PINNED.read_text().splitlines() if line.strip()]
    columns = [tuple(line.split(" ", 1)) for line in lines if not line.startswith("--")]
    keys = [
        line.removeprefix("-- ") for line in lines if line.startswith("-- PARTITION") or line.startswith("-- ORDER")
    ]
    return columns, keys  # type: ignore[return-value]


def test_the_table_has_the_exporters_columns_types_partitioning_and_order(tmp_path: Path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        sink.create(OTEL_TRACES)
        described = sink.rows(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'otel_traces' "
            "ORDER BY position"
        )
        keys = sink.rows(
            "SELECT partition_key, sorting_key FROM system.tables WHERE database = currentDatabase() "
            "AND name = 'otel_traces'"
        )
    finally:
        sink.close()
    columns, (partition, order) = pinned()
    assert described == columns
    assert list(OTEL_TRACES.columns) == [name for name, _ in columns]
    assert partition == f"PARTITION BY {keys[0][0]}"
    assert order == f"ORDER BY ({keys[0][1]})"


def test_a_finished_span_becomes_a_row_the_table_takes(tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "payment"}))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("choreo")
    with (
        tracer.start_as_current_span("payment capture_payment on OrderPaymentRequested", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("payment CapturePayment", kind=SpanKind.SERVER) as inner,
    ):
        inner.add_event("PaymentCaptured", {"choreo.version": "1"})
        inner.set_status(Status(StatusCode.ERROR, "declined"))
    child, parent = spans.get_finished_spans()
    sink = ClickHouseSink(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        sink.create(OTEL_TRACES)
        rows = [otel_row(child), otel_row(parent)]
        sink.insert(OTEL_TRACES, [tuple(row[c] for c in OTEL_TRACES.columns) for row in rows])
        stored = sink.query(
            "SELECT SpanName, SpanKind, ServiceName, ParentSpanId, StatusCode, StatusMessage, Events.Name, "
            "Duration > 0 FROM otel_traces ORDER BY Timestamp DESC"
        ).rows
    finally:
        sink.close()
    parent_id = f"{parent.context.span_id:016x}"
    assert stored[0][:6] == ("payment CapturePayment", "Server", "payment", parent_id, "Error", "declined")
    assert stored[0][6] == ["PaymentCaptured"]
    assert stored[1][:5] == ("payment capture_payment on OrderPaymentRequested", "Consumer", "payment", "", "Unset")

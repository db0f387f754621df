"""Live spans: with `tracing.sample` 0.5, the sagas head sampling picks get one OpenTelemetry
trace each (a span per command a shard handles and per policy reaction, linked through the W3C
traceparent in Kafka headers), exported both to `otel_traces` in the read store and over OTLP/HTTP
to a collector; the other sagas get none. Real Kafka, Ray and ClickHouse; the collector is an
HTTP endpoint in the test that decodes the OTLP protobuf requests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from events.tracing import sampled, trace_id
from shop.messages.inventory import AddStock
from shop.messages.orders import OrderLine, PlaceOrder
from tests.integration.test_stuck_sagas import HOPS

LIVE_HOPS = ["order PlaceOrder", *HOPS[1:]]
"""A confirmed one-line order's live spans, root first, each the only child of the one before: its
derived hops, but for the root, named by the client's command."""


class Collector:
    """An OTLP/HTTP traces endpoint: keeps (trace id, span id, parent span id, name) of each span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str]] = []
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend(
                            (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name) for s in scope.spans
                        )
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


def chain(spans: list[tuple[str, str, str, str]]) -> list[str]:
    """One trace's span names from its root down, while each span has one child; [] unless the
    trace has exactly one root and every parent is in the trace."""
    ids = {span_id for _, span_id, _, _ in spans}
    roots = [s for s in spans if not s[2].strip("0")]
    if len(roots) != 1 or any(p not in ids for _, _, p, _ in spans if p.strip("0")):
        return []
    names, span = [], roots[0]
    while True:
        names.append(span[3])
        children = [s for s in spans if s[2] == span[1]]
        if len(children) != 1:
            return names
        span = children[0]


def test_picked_sagas_are_traced_live_to_clickhouse_and_otlp_and_the_rest_not_at_all(
    make_settings: Any, start_system: Any, collector: Collector
) -> None:
    tracing = {"sample": 0.5, "exporters": ["clickhouse", "otlp"], "otlp_endpoint": collector.url}
    system = start_system(make_settings(shards=1, partitions=2, tracing=tracing), metrics=False)
    run = uuid.uuid4().hex[:6]
    system.submit_many([AddStock(sku=f"{run}-sku", quantity=100)])
    line = (OrderLine(sku=f"{run}-sku", quantity=1, unit_price_cents=250),)
    orders = [PlaceOrder(order_id=f"{run}-{i}", customer_id="c1", lines=line) for i in range(10)]
    picked = [o.order_id for o in orders if sampled(o.order_id, 0.5)]
    skipped = [o.order_id for o in orders if o.order_id not in picked]
    assert picked and skipped, "ten sagas at 0.5: some picked, some not"
    assert all(o.ok for o in system.submit_many(orders))

    deadline = time.monotonic() + 180
    stored: dict[str, list[tuple[str, str, str, str]]] = {}
    while time.monotonic() < deadline:
        rows = system.query("SELECT TraceId, SpanId, ParentSpanId, SpanName FROM otel_traces").rows
        stored = {}
        for row in rows:
            stored.setdefault(row[0], []).append(tuple(row))
        if all(len(stored.get(trace_id(o), [])) >= len(LIVE_HOPS) for o in picked):
            break
        time.sleep(2)
    for order_id in picked:
        assert chain(stored.get(trace_id(order_id), [])) == LIVE_HOPS, (order_id, stored.get(trace_id(order_id)))
    assert not [o for o in skipped if trace_id(o) in stored], "a saga head sampling left out has no span"
    stock = f"{run}-sku"  # AddStock's saga is its stock item: traced too when head sampling picks it
    assert set(stored) == {trace_id(o) for o in picked} | ({trace_id(stock)} if sampled(stock, 0.5) else set())
    services = system.query("SELECT DISTINCT ServiceName FROM otel_traces ORDER BY ServiceName").rows
    assert services == [("inventory",), ("order",), ("payment",), ("shipping",)]

    while time.monotonic() < deadline and len(collector.spans) < len(picked) * len(LIVE_HOPS):
        time.sleep(1)
    over_otlp: dict[str, list[tuple[str, str, str, str]]] = {}
    for span in collector.spans:
        over_otlp.setdefault(span[0], []).append(span)
    assert sorted(over_otlp) == sorted(stored)
    for order_id in picked:
        assert chain(over_otlp[trace_id(order_id)]) == LIVE_HOPS

"""Live spans: OpenTelemetry spans made on the write path, for the sagas head sampling picked.

A saga is picked (or not) once, from its id, at its first command (`events.tracing.sampled`). A
picked saga's events and commands carry a W3C `traceparent` Kafka header; the shard that takes a
command with one makes a span under it, so does the policy runner that reacts to an event with
one, and each passes its own span on in the header of what it produces. A saga that was not
picked has no header, and nothing on its path touches the SDK: each process pays one header
lookup per record, and with sampling off (the default) the SDK is not even imported.

Spans go to the exporters `metadata.tracing` names: `otlp` (to a collector's OTLP/HTTP endpoint),
`clickhouse` (the `otel_traces` table of the read store, in the layout of the OpenTelemetry
Collector's ClickHouse exporter, written by a projection host), or both."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.tracing import TRACEPARENT, parse_traceparent, sampled, trace_id, traceparent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Span

log = logging.getLogger("choreo.tracing")

Exporter = Literal["clickhouse", "otlp"]


class TracingConfig(BaseModel):
    """metadata.tracing: live spans on the write path (derived traces need no setting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample: float = Field(default=0.0, ge=0.0, le=1.0)
    """The fraction of sagas traced live, picked at each saga's first command; 0 turns live spans off."""
    exporters: tuple[Exporter, ...] = ("clickhouse",)
    otlp_endpoint: str = "http://localhost:4318/v1/traces"
    """Where `otlp` sends spans (OTLP over HTTP, protobuf)."""
    clickhouse_host: str = ""
    """Set by the bootstrap: the Ray actor name of the projection host that writes `otel_traces`."""
    namespace: str = ""
    """Set by the bootstrap: the deployment's Ray namespace (and the spans' service.namespace)."""

    @property
    def live(self) -> bool:
        return self.sample > 0 and bool(self.exporters)


Headers = list[tuple[str, str | bytes | None]]


def header_of(headers: dict[str, Any] | Sequence[tuple[str, Any]] | None) -> tuple[str, str] | None:
    """(trace id, span id) of a record's sampled `traceparent` header, if it has one."""
    if not headers:
        return None
    if isinstance(headers, dict):
        return parse_traceparent(headers.get(TRACEPARENT))
    for key, value in headers:
        if key == TRACEPARENT:
            return parse_traceparent(value)
    return None


class LiveSpans:
    """One process's tracer. Make it only when `TracingConfig.live`: it imports the SDK."""

    def __init__(self, config: TracingConfig, service: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self.config = config
        self.local = threading.local()
        local = self.local

        class SagaIds(RandomIdGenerator):
            """A saga's root span gets the saga's trace id (see `events.tracing.trace_id`)."""

            def generate_trace_id(self) -> int:
                wanted: int | None = getattr(local, "trace", None)
                return wanted if wanted is not None else super().generate_trace_id()

        resource = Resource.create({"service.name": service, "service.namespace": config.namespace or "choreo"})
        self.provider = TracerProvider(resource=resource, id_generator=SagaIds())
        for name in config.exporters:
            self.provider.add_span_processor(BatchSpanProcessor(_exporter(name, config)))
        self.tracer = self.provider.get_tracer("choreo")

    def picks(self, saga_id: str) -> bool:
        return sampled(saga_id, self.config.sample)

    def start(
        self,
        name: str,
        kind: Literal["server", "consumer"],
        start_ms: int,
        parent: tuple[str, str] | None = None,
        saga_id: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> Span:
        """A span under `parent` (trace id, span id), or the root of `saga_id`'s trace."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        context = None
        if parent is not None:
            remote = SpanContext(int(parent[0], 16), int(parent[1], 16), is_remote=True, trace_flags=TraceFlags(1))
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        else:
            self.local.trace = int(trace_id(saga_id), 16)
        try:
            return self.tracer.start_span(
                name,
                context=context,
                kind=SpanKind.SERVER if kind == "server" else SpanKind.CONSUMER,
                attributes=dict(attributes or {}),
                start_time=start_ms * 1_000_000,
            )
        finally:
            self.local.trace = None

    @staticmethod
    def header(span: Span) -> tuple[str, str | bytes | None]:
        ctx = span.get_span_context()
        return TRACEPARENT, traceparent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")

    @staticmethod
    def end(span: Span, error: str = "") -> None:
        if error:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def close(self) -> None:
        """Export what is pending and stop the exporters."""
        self.provider.shutdown()


def _exporter(name: Exporter, config: TracingConfig) -> Any:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.otlp_endpoint)
    return OtelTracesExporter(config)


def otel_row(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as a row of `otel_traces` (the OpenTelemetry Collector ClickHouse layout)."""
    ctx = span.context
    assert ctx is not None and span.start_time is not None and span.end_time is not None
    resource = {k: str(v) for k, v in span.resource.attributes.items()}
    scope = span.instrumentation_scope
    return {
        "Timestamp": datetime.fromtimestamp(span.start_time / 1e9, UTC),
        "TraceId": f"{ctx.trace_id:032x}",
        "SpanId": f"{ctx.span_id:016x}",
        "ParentSpanId": f"{span.parent.span_id:016x}" if span.parent is not None else "",
        "TraceState": ctx.trace_state.to_header() if ctx.trace_state else "",
        "SpanName": span.name,
        "SpanKind": span.kind.name.capitalize() if span.kind is not None else "Internal",
        "ServiceName": resource.get("service.name", ""),
        "ResourceAttributes": resource,
        "ScopeName": scope.name if scope is not None else "",
        "ScopeVersion": (scope.version or "") if scope is not None else "",
        "SpanAttributes": {k: str(v) for k, v in (span.attributes or {}).items()},
        "Duration": span.end_time - span.start_time,
        "StatusCode": {"UNSET": "Unset", "OK": "Ok", "ERROR": "Error"}[span.status.status_code.name],
        "StatusMessage": span.status.description or "",
        "Events.Timestamp": [datetime.fromtimestamp(e.timestamp / 1e9, UTC) for e in span.events],
        "Events.Name": [e.name for e in span.events],
        "Events.Attributes": [{k: str(v) for k, v in (e.attributes or {}).items()} for e in span.events],
        "Links.TraceId": [f"{link.context.trace_id:032x}" for link in span.links],
        "Links.SpanId": [f"{link.context.span_id:016x}" for link in span.links],
        "Links.TraceState": [link.context.trace_state.to_header() for link in span.links],
        "Links.Attributes": [{k: str(v) for k, v in (link.attributes or {}).items()} for link in span.links],
    }


class OtelTracesExporter:
    """Sends finished spans, as `otel_traces` rows, to the projection host that owns the read store
    (an embedded engine takes writes from one process only). Export runs in the SDK's batch thread."""

    def __init__(self, config: TracingConfig) -> None:
        self.config = config
        self.host: Any = None

    def export(self, spans: Sequence[ReadableSpan]) -> Any:
        import ray
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            if self.host is None:
                self.host = ray.get_actor(self.config.clickhouse_host, namespace=self.config.namespace)
            ray.get(self.host.insert_spans.remote([otel_row(s) for s in spans]), timeout=30)
            return SpanExportResult.SUCCESS
        except Exception as exc:  # a span is never worth a failed command
            log.warning("could not export %d spans to otel_traces: %s", len(spans), exc)
            self.host = None
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

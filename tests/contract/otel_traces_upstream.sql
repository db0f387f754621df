-- Pinned: the columns of the traces table the OpenTelemetry Collector's ClickHouse exporter
-- creates (opentelemetry-collector-contrib, exporter/clickhouseexporter, the Map-typed traces
-- table), one "name type" per line, Nested columns as ClickHouse flattens them. Codecs, indexes
-- and TTL are left out: they do not change what a query of the layout reads.
-- tests/contract/test_otel_traces_layout.py checks projections/otel_traces.py against it.
Timestamp DateTime64(9)
TraceId String
SpanId String
ParentSpanId String
TraceState String
SpanName LowCardinality(String)
SpanKind LowCardinality(String)
ServiceName LowCardinality(String)
ResourceAttributes Map(LowCardinality(String), String)
ScopeName String
ScopeVersion String
SpanAttributes Map(LowCardinality(String), String)
Duration UInt64
StatusCode LowCardinality(String)
StatusMessage String
Events.Timestamp Array(DateTime64(9))
Events.Name Array(LowCardinality(String))
Events.Attributes Array(Map(LowCardinality(String), String))
Links.TraceId Array(String)
Links.SpanId Array(String)
Links.TraceState Array(String)
Links.Attributes Array(Map(LowCardinality(String), String))
-- PARTITION BY toDate(Timestamp)
-- ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))

"""The `events_raw` projection: every event of every service, for audit SQL and saga trails."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from events.base import StoredEvent
from projections.base import POSITION_DDL, Lookup, Projection, Row, Table, position

KAFKA_TIMESTAMP = "DateTime64(3, 'UTC')"

EVENTS_RAW = Table(
    name="events_raw",
    columns=(
        "event_id", "event_type", "aggregate_type", "aggregate_id", "version", "occurred_at",
        "correlation_id", "causation_id", "schema_version", "payload", "kafka_timestamp",
    ),
    ddl=f"""
CREATE TABLE IF NOT EXISTS events_raw (
    event_id String, event_type LowCardinality(String), aggregate_type LowCardinality(String),
    aggregate_id String, version UInt32, occurred_at DateTime64(6, 'UTC'), correlation_id String,
    causation_id String, schema_version UInt16, payload String, kafka_timestamp {KAFKA_TIMESTAMP},
    {POSITION_DDL}
) ENGINE = MergeTree ORDER BY (correlation_id, occurred_at)""",
    added=(("kafka_timestamp", KAFKA_TIMESTAMP),),
)  # fmt: skip
"""`kafka_timestamp`: the Kafka record's timestamp, when the shard took the command (see
`events.base.StoredEvent.timestamp_ms`); with `occurred_at` it times each hop of a saga."""


class EventsRawProjection(Projection):
    name = "events_raw"
    topics = ()  # every topic cluster.yaml gives it
    tables = (EVENTS_RAW,)

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        rows: list[Row] = []
        for ev in events:
            env = ev.envelope
            rows.append(
                (
                    env.event_id, env.event_type, env.aggregate_type, env.aggregate_id, env.version,
                    env.occurred_at, env.correlation_id, env.causation_id, env.schema_version,
                    ev.payload.model_dump_json(), datetime.fromtimestamp(ev.timestamp_ms / 1000, UTC), *position(ev),
                )
            )  # fmt: skip
        return {EVENTS_RAW.name: rows}

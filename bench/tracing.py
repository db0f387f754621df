"""Tracing's cost, in the same run:

- the closed-loop loadtest (bench.e2e's, each run on fresh topics and a fresh read store) with
  live spans off (`tracing.sample` 0), at 1% and at 100% of sagas (exporter `clickhouse`: spans go to otel_traces through the projection host, so
  the SDK, the export and the inserts all run on the same two cores). The variants take turns,
  `--rounds` times (off, 1%, 100%, off, ...), so the host's drift spreads over all of them; each
  variant's figure is the mean of its rounds;
- derived traces have no switch: on the write path they are the timestamp each shard passes to
  produce() (librdkafka would read the clock otherwise), so "off" and "derived" are one and the
  same run. What they add is on the read side, the events_raw column `kafka_timestamp`: measured
  here as the events_raw projection (project + insert) of the same events with and without it.

    python -m bench.tracing [--duration 30] [--rounds 2] [--events 200000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from actors.runtime import tune_gc
from bench.common import Timer, bench_settings, console, order_saga_events, report
from bench.e2e import run_choreo, with_shards
from choreography.config import Settings
from choreography.topology import ensure_topics
from events.base import StoredEvent
from projections.base import Lookup, Row, Table
from projections.events_raw import EVENTS_RAW, EventsRawProjection
from projections.sink import ClickHouseSink

VARIANTS = {"off (derived traces only)": 0.0, "live spans 1%": 0.01, "live spans 100%": 1.0}
BATCH = 50_000


def traced(settings: Settings, sample: float) -> Settings:
    return settings.model_copy(
        update={"tracing": settings.tracing.model_copy(update={"sample": sample, "exporters": ("clickhouse",)})}
    )


WITHOUT = Table(
    name="events_raw_untimed",
    columns=tuple(c for c in EVENTS_RAW.columns if c != "kafka_timestamp"),
    ddl=EVENTS_RAW.ddl.replace("EXISTS events_raw ", "EXISTS events_raw_untimed ", 1).replace(
        ", kafka_timestamp DateTime64(3, 'UTC')", ""
    ),
)


class UntimedEventsRaw(EventsRawProjection):
    """events_raw as it was before derived traces: no kafka_timestamp."""

    tables = (WITHOUT,)

    def project(self, events: Sequence[StoredEvent], lookup: Lookup) -> dict[str, list[Row]]:
        cut = EVENTS_RAW.columns.index("kafka_timestamp")
        return {WITHOUT.name: [row[:cut] + row[cut + 1 :] for row in super().project(events, lookup)[EVENTS_RAW.name]]}


def read_side_cost(events: int, workdir: Path, repeats: int = 3) -> dict[str, float]:
    """events_raw events/s (project + insert, in batches) with and without kafka_timestamp: the
    two take turns `repeats` times, each on a fresh table after one warm-up pass; the median counts."""
    stream = [
        StoredEvent(env, payload, "order-events", 0, i, 1_700_000_000_000 + i)
        for i, (env, payload) in enumerate(order_saga_events(events // 6 + 1))
    ][:events]
    sink = ClickHouseSink(f"chdb://{workdir / 'clickhouse-read-side'}")
    timings: dict[str, list[float]] = {"without": [], "with": []}
    try:
        for repeat in range(repeats + 1):
            for name, projection in (("without", UntimedEventsRaw()), ("with", EventsRawProjection())):
                table = projection.tables[0]
                sink.drop(table)
                sink.create(table)
                with Timer() as t:
                    for start in range(0, len(stream), BATCH):
                        batch = stream[start : start + BATCH]
                        sink.insert(table, projection.project(batch, sink.rows)[table.name])
                if repeat:  # the first pass warms the engine and the code up
                    timings[name].append(len(stream) / t.seconds)
    finally:
        sink.close()
    figures = {f"events_per_s_{name}_kafka_timestamp": statistics.median(v) for name, v in timings.items()}
    figures["cost"] = 1 - figures["events_per_s_with_kafka_timestamp"] / figures["events_per_s_without_kafka_timestamp"]
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    tune_gc()
    workdir = Path(tempfile.mkdtemp(prefix="choreo-bench-tracing-"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        for n, (name, sample) in enumerate(VARIANTS.items()):
            console.print(f"round {round_ + 1}/{args.rounds}: {name} ...")
            # Fresh topics and read store for each run: a run on the last one's topics would spend
            # its first seconds on that run's projection backlog.
            settings = with_shards(bench_settings(args.config, workdir / f"run-{round_}-{n}"), args.shards)
            ensure_topics(settings)
            result = run_choreo(traced(settings, sample), args.duration, args.concurrency)
            runs[name].append({k: result[k] for k in ("sagas_per_s", "completed", "latency_ms")})
            ray.shutdown()
    console.print(f"events_raw with and without kafka_timestamp, {args.events:,} events ...")
    read_side = read_side_cost(args.events, workdir)
    off = statistics.mean(r["sagas_per_s"] for r in runs["off (derived traces only)"])
    rows = []
    for name, results in runs.items():
        rate = statistics.mean(r["sagas_per_s"] for r in results)
        rows.append(
            {
                "scenario": f"loadtest, {name}",
                "orders_per_s": rate,
                "rounds": " / ".join(f"{r['sagas_per_s']:.0f}" for r in results),
                "cost_vs_off": 1 - rate / off,
            }
        )
    rows.append(
        {
            "scenario": "events_raw projection with kafka_timestamp (derived traces' read side)",
            "orders_per_s": read_side["events_per_s_with_kafka_timestamp"],
            "rounds": f"without: {read_side['events_per_s_without_kafka_timestamp']:,.0f} events/s",
            "cost_vs_off": read_side["cost"],
        }
    )
    extra = {
        "runs": runs,
        "read_side": read_side,
        "costs": {row["scenario"]: row["cost_vs_off"] for row in rows},
        "note": "orders_per_s of the last row is events/s; derived traces cost nothing on the write path "
        "(no switch: off and derived are one run)",
    }
    report("tracing", rows, extra)
    return extra


if __name__ == "__main__":
    main()

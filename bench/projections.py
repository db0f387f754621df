"""Projection throughput into ClickHouse, beside a raw insert of the same rows and a raw Kafka
consume of the same messages, all in one run.

    python -m bench.projections [--orders 50000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from actors.runtime import tune_gc
from bench.common import (
    Timer,
    bench_settings,
    console,
    encode_all,
    order_saga_events,
    produce_blocking,
    report,
    timed_consume,
)
from choreography.topology import ensure_topics
from events.log.kafka_io import consumer_config, producer_config
from events.log.topics import partition_for
from projections.base import Table
from projections.runner import ProjectionRunner
from projections.sink import ClickHouseSink
from shop.messages import registry as shop_registry


def produce(settings, topic: str, messages: list[tuple[bytes, bytes]], partitions: int) -> float:
    producer = Producer(producer_config(settings.kafka.client_config()))
    with Timer() as t:
        for key, value in messages:
            produce_blocking(producer, topic, key, value, partition_for(key.decode(), partitions))
        producer.flush(120)
    return t.seconds


def raw_consume(settings, topic: str, expected: int) -> float:
    consumer = Consumer(consumer_config(settings.kafka.client_config(), "bench-raw-consume"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    return timed_consume(consumer, expected)


def run_projection(settings, name: str, sink: ClickHouseSink, expected: int, batch: int) -> tuple[float, int]:
    runner = ProjectionRunner(
        settings.projection(name), sink, settings.kafka.client_config(), shop_registry(),
        group_id=f"{settings.namespace}-bench-{name}", topics=["order-events"],
        topic_prefix=settings.topic_prefix, batch_size=batch, flush_interval_ms=500,
    )  # fmt: skip
    runner.start()
    with Timer() as t:
        while runner.totals.events < expected:
            runner.poll_batch()
    runner.stop()
    return t.seconds, runner.totals.rows


def raw_insert(sink: ClickHouseSink, table: Table, rows: list[tuple], batch: int) -> float:
    copy = Table(name=f"{table.name}_raw", columns=table.columns,
                 ddl=table.ddl.replace(f"EXISTS {table.name} ", f"EXISTS {table.name}_raw ", 1))  # fmt: skip
    sink.create(copy)
    with Timer() as t:
        for start in range(0, len(rows), batch):
            sink.insert(copy, rows[start : start + batch])
    return t.seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50_000, help="orders in the stream (6 events each)")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per ClickHouse insert")
    parser.add_argument("--config", default=None, help="cluster file (default: cluster.yaml)")
    args = parser.parse_args(argv)

    tune_gc()
    workdir = Path(tempfile.mkdtemp(prefix="choreo-bench-"))
    settings = bench_settings(args.config, workdir)
    ensure_topics(settings)
    topic = settings.topic_name("order-events")
    partitions = settings.partitions("order")
    console.print(f"Encoding {args.orders:,} orders ...")
    messages = encode_all(order_saga_events(args.orders))
    n = len(messages)
    produce_s = produce(settings, topic, messages, partitions)
    consume_s = raw_consume(settings, topic, n)

    sink = ClickHouseSink(settings.clickhouse.dsn)
    rows_out = []
    extra: dict = {"events": n, "batch_rows": args.batch,
                   "baselines": {"raw_kafka_produce_events_per_s": n / produce_s,
                                 "raw_kafka_consume_events_per_s": n / consume_s}}  # fmt: skip
    rows_out.append({"scenario": "raw confluent-kafka produce", "events": n, "seconds": produce_s,
                     "events_per_s": n / produce_s, "vs_raw_insert": ""})  # fmt: skip
    rows_out.append({"scenario": "raw confluent-kafka consume", "events": n, "seconds": consume_s,
                     "events_per_s": n / consume_s, "vs_raw_insert": ""})  # fmt: skip
    registry = shop_registry()
    decoded = [registry.decode_event(v, topic, 0, i) for i, (_, v) in enumerate(messages)]
    for name in ("events_raw", "orders"):
        seconds, rows = run_projection(settings, name, sink, n, args.batch)
        projection = settings.projection(name)
        table = projection.tables[0]
        baseline_rows = projection.project(decoded, sink.rows)[table.name]
        insert_s = raw_insert(sink, table, baseline_rows, args.batch)
        ratio = (n / seconds) / (len(baseline_rows) / insert_s)
        rows_out.append(
            {
                "scenario": f"raw ClickHouse insert ({table.name} rows)",
                "events": len(baseline_rows),
                "seconds": insert_s,
                "events_per_s": len(baseline_rows) / insert_s,
                "vs_raw_insert": "",
            }
        )
        rows_out.append(
            {
                "scenario": f"projection {name} (Kafka -> decode -> rows -> ClickHouse)",
                "events": n,
                "seconds": seconds,
                "events_per_s": n / seconds,
                "vs_raw_insert": f"{ratio:.0%}",
            }
        )
        extra[name] = {"projection_events_per_s": n / seconds, "raw_insert_rows_per_s": len(baseline_rows) / insert_s,
                       "ratio_to_raw_insert": ratio, "rows_written": rows}  # fmt: skip
    report("projections", rows_out, extra)
    return extra


if __name__ == "__main__":
    main()

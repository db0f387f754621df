"""End-to-end throughput and latency through the whole choreography (closed loop), with the
same-run baselines: raw confluent-kafka moving the same number and size of messages, and the
`eventsourcing` library running the same order flow on SQLite in one process.

    python -m bench.e2e [--duration 30] [--shards 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from confluent_kafka import Consumer, Producer, TopicPartition

from actors.runtime import tune_gc
from bench.common import Timer, bench_settings, console, produce_blocking, report, timed_consume
from choreography.config import Settings
from choreography.loadtest import LoadSpec, LoadTest, SagaObserver, new_run_id
from choreography.system import System
from choreography.topology import admin_client, ensure_topics
from choreography.workload import load_workload
from events.log.kafka_io import consumer_config, producer_config


def topic_sizes(settings: Settings) -> dict[str, int]:
    """Committed end offsets summed per topic, for every topic of the topology."""
    consumer = Consumer(consumer_config(settings.kafka.client_config(), "bench-sizes"))
    sizes = {}
    for spec in settings.topics:
        name = settings.topic_name(spec.name)
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        sizes[name] = sum(_end(consumer, name, p) for p in parts)
    consumer.close()
    return sizes


def _end(consumer: Consumer, topic: str, partition: int) -> int:
    for _ in range(100):  # a brand-new partition may not have its leader ready yet
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except Exception:
            time.sleep(0.1)
    return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]


def with_shards(settings: Settings, shards: int) -> Settings:
    services = {
        name: spec.model_copy(update={"shards": min(shards, settings.partitions(name))})
        for name, spec in settings.services.items()
    }
    return settings.model_copy(update={"services": services})


def run_choreo(settings: Settings, duration: float, concurrency: int) -> dict[str, Any]:
    before = topic_sizes(settings)
    system = System(settings)
    try:
        run = new_run_id()
        assert settings.workload, "the config names no workload"
        workload = load_workload(settings.workload, "metadata.workload", run, seed=1, mix={})
        spec = LoadSpec(mode="closed", duration=duration, concurrency=concurrency, drain_timeout=180)
        test = LoadTest(system, spec, workload, run)
        system.submit_many(workload.setup())
        observer = SagaObserver(system, run, workload)
        observer.start()
        load_s = test.run_load(observer)
        test.drain(observer, time.monotonic() - load_s)
        observer.stop_flag.set()
        result = test.report(observer, load_s)
        result["nodes"] = sorted({a["NodeID"][:8] for a in ray.nodes() if a["Alive"]})
    finally:
        system.close()
    after = topic_sizes(settings)
    result["messages_moved"] = sum(after[t] - before.get(t, 0) for t in after)
    return result


def raw_kafka(settings: Settings, messages: int, size: int = 600) -> dict[str, float]:
    """Produce and consume `messages` messages of `size` bytes with plain confluent-kafka."""
    topic = f"{settings.topic_prefix}raw-baseline-{uuid.uuid4().hex[:6]}"
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    admin.create_topics([NewTopic(topic, 8, 1)])[topic].result()
    time.sleep(1)  # let the new partitions' leaders settle
    producer = Producer(producer_config(settings.kafka.client_config()))
    payload = b"x" * size
    with Timer() as produce:
        for i in range(messages):
            produce_blocking(producer, topic, str(i).encode(), payload)
        producer.flush(300)
    consumer = Consumer(consumer_config(settings.kafka.client_config(), f"raw-{topic}"))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(8)])
    consume_s = timed_consume(consumer, messages)
    return {"messages": messages, "produce_s": produce.seconds, "consume_s": consume_s,
            "messages_per_s": messages / (produce.seconds + consume_s)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--peer-orders", type=int, default=3000)
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    tune_gc()
    settings = with_shards(bench_settings(args.config, Path(tempfile.mkdtemp(prefix="choreo-bench-"))), args.shards)
    ensure_topics(settings)
    choreo = run_choreo(settings, args.duration, args.concurrency)
    ray.shutdown()
    raw = raw_kafka(settings, choreo["messages_moved"])
    from bench.peer_eventsourcing import run_peer

    console.print("Running the eventsourcing peer (SQLite, one process) ...")
    peer = run_peer(orders=args.peer_orders)
    orders_s = choreo["sagas_per_s"]
    # The raw floor moves the same messages with no logic: its time bounds what Kafka alone costs.
    raw_orders_s = choreo["completed"] / (raw["produce_s"] + raw["consume_s"])
    lat = choreo["latency_ms"]["start_to_terminal"]
    rows = [
        {"scenario": "choreo e2e (closed loop)", "orders_per_s": orders_s, "p50_ms": lat["p50"], "p99_ms": lat["p99"]},
        {"scenario": f"raw confluent-kafka: same {choreo['messages_moved']:,} messages", "orders_per_s": raw_orders_s,
         "p50_ms": "", "p99_ms": ""},
        {"scenario": "eventsourcing 9.x, SQLite, one process", "orders_per_s": peer["orders_per_s"], "p50_ms": "", "p99_ms": ""},
    ]  # fmt: skip
    extra = {
        "choreo": {k: v for k, v in choreo.items() if k != "timeline"},
        "baselines": {"raw_kafka": raw, "peer_eventsourcing_sqlite": peer},
        "ratios": {"choreo_to_raw_kafka": orders_s / raw_orders_s, "choreo_to_peer": orders_s / peer["orders_per_s"]},
    }
    report("e2e", rows, extra)
    return extra


if __name__ == "__main__":
    main()

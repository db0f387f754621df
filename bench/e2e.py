"""End-to-end throughput and latency through the whole choreography (closed loop), with the
same-run baselines:

- the raw Kafka floor: confluent-kafka producing N event-sized messages in transactions of 2,000,
  then consuming them read_committed; floor = N / (produce s + consume s). Choreo's rate in the
  same unit is orders/s x the events one order stores (events only, not internal commands);
- the `eventsourcing` library running the same order flow in one process, configured as its
  maintainers would: aggregate cache on, SQLite in WAL mode with synchronous=NORMAL; and in
  memory (POPO). Its defaults (no cache, synchronous=FULL) stay as a labelled extra row.

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


def run_choreo(settings: Settings, duration: float, concurrency: int, half_rate: bool = False) -> dict[str, Any]:
    """The closed loop (the sustained maximum); with `half_rate`, then an open loop at half its
    rate for the latency there, on the same system once the first has drained."""
    before = topic_sizes(settings)
    system = System(settings)
    try:
        result = _load(system, LoadSpec(mode="closed", duration=duration, concurrency=concurrency, drain_timeout=180))
        after = topic_sizes(settings)
        if half_rate:
            half = _load(system, LoadSpec(mode="open", rate=result["sagas_per_s"] / 2, duration=min(duration, 20)))
            result["half_rate_open_loop"] = {k: half[k] for k in ("offered_sagas_per_s", "sagas_per_s", "latency_ms")}
        result["nodes"] = sorted({a["NodeID"][:8] for a in ray.nodes() if a["Alive"]})
    finally:
        system.close()
    result["messages_moved"] = sum(after[t] - before.get(t, 0) for t in after)
    stored = {settings.topic_name(f"{service}-events") for service in settings.services}
    result["events_stored"] = sum(after[t] - before.get(t, 0) for t in stored)
    return result


def _load(system: System, spec: LoadSpec) -> dict[str, Any]:
    settings = system.settings
    run = new_run_id()
    assert settings.workload, "the config names no workload"
    workload = load_workload(settings.workload, "metadata.workload", run, seed=1, mix={})
    test = LoadTest(system, spec, workload, run)
    system.submit_many(workload.setup())
    observer = SagaObserver(system, run, workload)
    observer.start()
    load_s = test.run_load(observer)
    test.drain(observer, time.monotonic() - load_s)
    observer.stop_flag.set()
    return test.report(observer, load_s)


def read_side(result: dict[str, Any]) -> dict[str, Any]:
    """Whether the read side kept up with the closed loop: place -> visible p99, and the projection
    lag (events not yet in ClickHouse) when the load stopped and at its highest."""
    during = [s["lag"].get("projection", 0) for s in result["timeline"] if s["t"] <= result["load_seconds"]]
    return {
        "start_to_visible_p99_ms": result["latency_ms"]["start_to_visible"]["p99"],
        "projection_lag_at_end_of_load": during[-1] if during else 0,
        "projection_lag_max": max(during, default=0),
    }


TXN_BATCH = 2000


def event_bytes(settings: Settings, sample: int = 5000) -> int:
    """The mean size (key + value) of the events the run stored, from the order events topic."""
    topic = settings.topic_name("order-events")
    consumer = Consumer(consumer_config(settings.kafka.client_config(), f"bench-event-size-{uuid.uuid4().hex[:6]}"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    sizes: list[int] = []
    while len(sizes) < sample:
        msgs = [m for m in consumer.consume(1000, timeout=2.0) if m.error() is None]
        if not msgs:
            break
        sizes += [len(m.key() or b"") + len(m.value() or b"") for m in msgs]
    consumer.close()
    return round(sum(sizes) / len(sizes)) if sizes else 450


def raw_kafka_floor(settings: Settings, messages: int, size: int) -> dict[str, float]:
    """Produce `messages` messages of `size` bytes in transactions of TXN_BATCH, then consume
    them read_committed: the floor Kafka alone sets for stored events."""
    topic = f"{settings.topic_prefix}raw-floor-{uuid.uuid4().hex[:6]}"
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    admin.create_topics([NewTopic(topic, 8, 1)])[topic].result()
    time.sleep(1)  # let the new partitions' leaders settle
    producer = Producer(producer_config(settings.kafka.client_config(), f"{topic}-txn"))
    producer.init_transactions(30)
    payload = b"x" * max(1, size - 8)
    with Timer() as produce:
        for start in range(0, messages, TXN_BATCH):
            producer.begin_transaction()
            for i in range(start, min(start + TXN_BATCH, messages)):
                produce_blocking(producer, topic, b"%08d" % i, payload)
            producer.commit_transaction(60)
    consumer = Consumer(consumer_config(settings.kafka.client_config(), f"raw-{topic}"))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(8)])
    consume_s = timed_consume(consumer, messages)
    return {"messages": messages, "bytes": size, "produce_s": produce.seconds, "consume_s": consume_s,
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
    choreo = run_choreo(settings, args.duration, args.concurrency, half_rate=True)
    ray.shutdown()
    orders_s = choreo["sagas_per_s"]
    events_per_order = choreo["events_stored"] / choreo["completed"]
    size = event_bytes(settings)
    console.print(
        f"Raw Kafka floor: {choreo['events_stored']:,} messages of {size} bytes, transactions of {TXN_BATCH} ..."
    )
    floor = raw_kafka_floor(settings, choreo["events_stored"], size)
    from bench.peer_eventsourcing import run_peer

    console.print("Running the eventsourcing peer (one process): SQLite, in memory, and its defaults ...")
    cache = 10 * args.peer_orders
    peers = {
        "sqlite": run_peer(orders=args.peer_orders, aggregate_cache=cache, synchronous="NORMAL"),
        "memory": run_peer(orders=args.peer_orders, aggregate_cache=cache, persistence="memory"),
        "sqlite_defaults": run_peer(orders=args.peer_orders),
    }
    lat = choreo["latency_ms"]["start_to_terminal"]
    half = choreo["half_rate_open_loop"]
    half_lat = half["latency_ms"]["start_to_terminal"]
    choreo_events_s = orders_s * events_per_order
    rows = [
        {"scenario": "choreo e2e (closed loop)", "orders_per_s": orders_s, "events_per_s": choreo_events_s,
         "p50_ms": lat["p50"], "p99_ms": lat["p99"]},
        {"scenario": "choreo open loop at half the closed-loop rate", "orders_per_s": half["sagas_per_s"],
         "events_per_s": half["sagas_per_s"] * events_per_order, "p50_ms": half_lat["p50"], "p99_ms": half_lat["p99"]},
        {"scenario": f"raw Kafka floor: {size} B messages, txns of {TXN_BATCH}, read_committed",
         "orders_per_s": floor["messages_per_s"] / events_per_order, "events_per_s": floor["messages_per_s"],
         "p50_ms": "", "p99_ms": ""},
        {"scenario": "eventsourcing 9.x: cache on, SQLite WAL synchronous=NORMAL", "orders_per_s": peers["sqlite"]["orders_per_s"],
         "events_per_s": peers["sqlite"]["events_per_s"], "p50_ms": "", "p99_ms": ""},
        {"scenario": "eventsourcing 9.x: cache on, in memory (POPO)", "orders_per_s": peers["memory"]["orders_per_s"],
         "events_per_s": peers["memory"]["events_per_s"], "p50_ms": "", "p99_ms": ""},
        {"scenario": "(extra) eventsourcing 9.x defaults: no cache, SQLite synchronous=FULL",
         "orders_per_s": peers["sqlite_defaults"]["orders_per_s"], "events_per_s": peers["sqlite_defaults"]["events_per_s"],
         "p50_ms": "", "p99_ms": ""},
    ]  # fmt: skip
    extra = {
        "choreo": {k: v for k, v in choreo.items() if k != "timeline"},
        "read_side": read_side(choreo),
        "events_per_order": events_per_order,
        "baselines": {"raw_kafka_floor": floor, **{f"peer_eventsourcing_{k}": v for k, v in peers.items()}},
        "ratios": {
            "choreo_to_raw_kafka_floor": choreo_events_s / floor["messages_per_s"],
            "choreo_to_peer_sqlite": orders_s / peers["sqlite"]["orders_per_s"],
            "choreo_to_peer_memory": orders_s / peers["memory"]["orders_per_s"],
            "choreo_to_peer_sqlite_defaults": orders_s / peers["sqlite_defaults"]["orders_per_s"],
        },
    }
    report("e2e", rows, extra)
    return extra


if __name__ == "__main__":
    main()

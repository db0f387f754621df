"""Rehydration speed of one shard: replay from zero and from a snapshot, recovery after a kill,
beside a raw confluent-kafka consume of the same partition, in one run.

    python -m bench.rehydration [--events 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
from confluent_kafka import Consumer, Producer, TopicPartition

from actors.runtime import tune_gc
from actors.shard import Shard
from actors.shard_actor import spawn_shard
from bench.common import Timer, bench_settings, console, order_saga_events, produce_blocking, report, timed_consume
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.log.kafka_io import consumer_config, producer_config
from shop.messages import registry as shop_registry
from shop.messages.orders import CancelOrder


def fill_partition(settings, topic: str, events: int, partition: int = 0, first_order: int = 0) -> float:
    """Write `events` order events (6 per order) of orders whose ids hash to `partition`, to it;
    returns seconds spent producing."""
    registry = shop_registry()
    producer = Producer(producer_config(settings.kafka.client_config()))
    orders = order_saga_events(events // 6 + 1, first=first_order, partition=(partition, settings.partitions("order")))
    with Timer() as t:
        for i, (env, payload) in enumerate(orders):
            if i >= events:
                break
            produce_blocking(producer, topic, env.aggregate_id.encode(), registry.encode_event(env, payload), partition)
            if i % 100_000 == 0 and i:
                console.print(f"  produced {i:,}")
        producer.flush(300)
    return t.seconds


def raw_consume(settings, topic: str, partition: int, expected: int) -> float:
    consumer = Consumer(consumer_config(settings.kafka.client_config(), "bench-raw", **{"enable.partition.eof": True}))
    consumer.assign([TopicPartition(topic, partition, 0)])
    return timed_consume(consumer, expected)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the shard's partition")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    tune_gc()
    settings = bench_settings(args.config, Path(tempfile.mkdtemp(prefix="choreo-bench-")))
    services = dict(settings.services)
    # One shard per partition, so shard 0 owns exactly partition 0.
    services["order"] = services["order"].model_copy(
        update={"shards": settings.partitions("order"), "deadline_s": None}
    )
    settings = settings.model_copy(update={"services": services})
    ensure_topics(settings)
    topic = settings.topic_name("order-events")
    n = args.events
    console.print(f"Producing {n:,} events into {topic}[0] ...")
    fill_partition(settings, topic, n)
    config = shard_config(settings, "order", 0)

    consume_s = raw_consume(settings, topic, 0, n)
    shard = Shard(config, settings.aggregate("order"), shop_registry())
    zero = shard.stats
    with Timer() as snap:
        written = shard.snapshot_now()
    shard.close()
    tail = n // 10
    fill_partition(settings, topic, tail, first_order=100 * n)  # past every id the first fill tried
    again = Shard(config, settings.aggregate("order"), shop_registry())
    from_snapshot = again.stats
    again.close()

    ray.init(include_dashboard=False, log_to_driver=False)
    actor = spawn_shard(config, name="bench-shard")
    ray.get(actor.ready.remote())
    probe = CancelOrder(order_id="bench-0")
    killed = time.perf_counter()
    ray.kill(actor, no_restart=False)
    ray.get(actor.handle.remote([probe]))
    recovery_s = time.perf_counter() - killed
    ray.shutdown()

    rows = [
        {"scenario": "raw confluent-kafka consume of the partition", "events": n, "seconds": consume_s,
         "events_per_s": n / consume_s},
        {"scenario": "rehydrate from zero (decode + evolve)", "events": zero.events, "seconds": zero.seconds,
         "events_per_s": zero.events_per_s},
        {"scenario": f"write snapshot ({written:,} aggregates)", "events": written, "seconds": snap.seconds,
         "events_per_s": written / snap.seconds},
        {"scenario": f"rehydrate from snapshot + {tail:,}-event tail", "events": from_snapshot.events + from_snapshot.snapshots,
         "seconds": from_snapshot.seconds, "events_per_s": (n + tail) / from_snapshot.seconds},
        {"scenario": "recovery after ray.kill (kill -> serving)", "events": n + tail, "seconds": recovery_s,
         "events_per_s": (n + tail) / recovery_s},
    ]  # fmt: skip
    extra = {
        "events": n,
        "rehydration_events_per_s_from_zero": zero.events_per_s,
        "rehydration_seconds_from_snapshot": from_snapshot.seconds,
        "recovery_seconds": recovery_s,
        "ratio_to_raw_consume": zero.events_per_s / (n / consume_s),
        "baselines": {"raw_kafka_consume_events_per_s": n / consume_s},
    }
    report("rehydration", rows, extra)
    return extra


if __name__ == "__main__":
    main()

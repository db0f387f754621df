"""Durable dedup of client commands: store size per shard after N orders, restart and index
rebuild times, duplicate lookups, against a raw produce of the same events.

python -m bench.dedup --orders 100000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from actors.shard import Shard
from bench.common import Timer, bench_settings, console, produce_blocking, report
from choreography.config import Settings
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.log.kafka_io import consumer_config, watermarks
from events.log.secrets import resolve
from shop.messages import registry as shop_registry
from shop.messages.orders import OrderLine, PlaceOrder

BATCH = 2000


def _orders(n: int) -> list[PlaceOrder]:
    line = (OrderLine(sku="SKU-1", quantity=1, unit_price_cents=1250),)
    return [PlaceOrder(order_id=f"bench-{i}", customer_id=f"c{i % 997}", lines=line) for i in range(n)]


def _one_shard(settings: Settings) -> Settings:
    services = dict(settings.services)
    services["order"] = services["order"].model_copy(update={"shards": 1})
    return settings.model_copy(update={"services": services})


def _shard(settings: Settings) -> Shard:
    return Shard(shard_config(settings, "order", 0), settings.aggregate("order"), shop_registry())


def _topic_bytes(settings: Settings, topic: str) -> tuple[int, int]:
    """(records, key + value bytes) committed in a topic."""
    consumer = Consumer(consumer_config(settings.kafka.client_config(), "bench-dedup-size"))
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    records = size = 0
    for p in meta.partitions:
        _, high = watermarks(consumer, topic, p)
        consumer.assign([TopicPartition(topic, p, 0)])
        while True:
            msgs = [m for m in consumer.consume(10_000, timeout=1.0) if m.error() is None]
            if not msgs:
                break
            records += len(msgs)
            size += sum(len(m.key() or b"") + len(m.value() or b"") for m in msgs)
            if (msgs[-1].offset() or 0) >= high - 2:
                break
    consumer.close()
    return records, size


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="choreo-bench-dedup-"))
    settings = _one_shard(bench_settings(args.config, workdir))
    ensure_topics(settings)
    orders = _orders(args.orders)
    registry = shop_registry()

    shard = _shard(settings)
    with console.status(f"placing {len(orders):,} orders through one order shard"), Timer() as placing:
        for start in range(0, len(orders), BATCH):
            outcomes = shard.handle(list(orders[start : start + BATCH]))
            assert all(o.ok for o in outcomes)
    events = [e for o in shard.handle(orders[:BATCH]) for e in o.events]  # duplicates: lookups + fetch
    with Timer() as dup:
        again = shard.handle(orders[-BATCH:])
    assert all(o.duplicate for o in again)
    shard.close()

    raw_topic = settings.topic_name("order-commands")  # an unused topic of the same shape: raw baseline
    producer = Producer({**resolve(settings.kafka.client_config()), "linger.ms": 5, "log_level": 3})
    payloads = [(e.aggregate_id.encode(), registry.encode_event(e.envelope, e.payload)) for e in events]
    with Timer() as raw:
        for i in range(len(orders)):
            key, value = payloads[i % len(payloads)]
            produce_blocking(producer, raw_topic, key, value)
        producer.flush(60)

    state_dir = Path(settings.state_dir)
    index_bytes = _dir_bytes(state_dir)
    records, topic_bytes = _topic_bytes(settings, settings.topic_name("order-dedup"))
    with Timer() as restart:
        restarted = _shard(settings)
    restarted.close()
    shutil.rmtree(state_dir)
    with Timer() as rebuild:
        rebuilt = _shard(settings)
    caught_up = rebuilt.stats.dedup_caught_up
    with Timer() as dup_restarted:
        assert all(o.duplicate for o in rebuilt.handle(orders[:BATCH]))
    rebuilt.close()
    shutil.rmtree(workdir, ignore_errors=True)

    n = len(orders)
    rows = [
        {"scenario": "raw confluent-kafka produce of the same events", "n": n, "seconds": raw.seconds,
         "per_s": n / raw.seconds},
        {"scenario": "PlaceOrder through one shard (events + dedup record, one txn per batch)", "n": n,
         "seconds": placing.seconds, "per_s": n / placing.seconds},
        {"scenario": f"resubmit the last {BATCH:,} (recent: answered from memory)", "n": BATCH,
         "seconds": dup.seconds, "per_s": BATCH / dup.seconds},
        {"scenario": f"resubmit the first {BATCH:,} after a restart (index lookup + events read back)",
         "n": BATCH, "seconds": dup_restarted.seconds, "per_s": BATCH / dup_restarted.seconds},
        {"scenario": "restart with the index in place (snapshots + tail + index catch-up)", "n": n,
         "seconds": restart.seconds, "per_s": n / restart.seconds},
        {"scenario": "restart with the index lost (rebuilt from the dedup topic)", "n": caught_up,
         "seconds": rebuild.seconds, "per_s": caught_up / rebuild.seconds},
    ]  # fmt: skip
    extra = {
        "orders": n,
        "dedup_index_bytes": index_bytes,
        "dedup_index_bytes_per_order": index_bytes / n,
        "dedup_topic_records": records,
        "dedup_topic_bytes": topic_bytes,
    }
    report("dedup", rows, extra)
    console.print(
        f"dedup store of one shard after {n:,} orders: index {index_bytes / 1e6:.1f} MB "
        f"({index_bytes / n:.0f} B/order), topic {records:,} records, {topic_bytes / 1e6:.1f} MB"
    )
    return {"rows": rows, **extra}


if __name__ == "__main__":
    main()

"""Shared helpers for benchmarks: isolated settings, synthetic order event streams, reports."""

from __future__ import annotations

import json
import platform
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from choreography.config import Settings, load_settings
from events.base import Envelope, Event, new_id
from events.log.topics import partition_for
from shop.messages import registry as shop_registry
from shop.messages.orders import (
    OrderConfirmed,
    OrderLine,
    OrderLineReserved,
    OrderPaid,
    OrderPaymentRequested,
    OrderPlaced,
)

RESULTS = Path(__file__).with_name("results")
console = Console()


def bench_settings(config: str | None, workdir: Path) -> Settings:
    """The repo's topology on fresh topics (unique prefix) and a fresh embedded ClickHouse."""
    base = load_settings(config or "cluster.yaml")
    run = uuid.uuid4().hex[:8]
    return base.model_copy(
        update={
            "namespace": f"bench{run}",
            "topic_prefix": f"bench{run}-",
            "clickhouse": base.clickhouse.model_copy(update={"dsn": f"chdb://{workdir / 'clickhouse'}"}),
            "state_dir": str(workdir / "state"),
        }
    )


def order_saga_events(
    orders: int, seed: int = 1, first: int = 0, partition: tuple[int, int] | None = None
) -> Iterator[tuple[Envelope, Event]]:
    """A realistic order-events stream: each order placed, reserved, paid and confirmed. With
    `partition` (p, partitions), only orders whose id hashes to partition p, as a shard's partition
    holds them (ids `bench-<first>`, `bench-<first + 1>`, ... that hash elsewhere are skipped)."""
    rng = random.Random(seed)
    t0 = datetime.now(UTC)
    candidates = count(first)
    for _ in range(orders):
        i = next(candidates)
        while partition is not None and partition_for(f"bench-{i}", partition[1]) != partition[0]:
            i = next(candidates)
        oid = f"bench-{i}"
        lines = tuple(
            OrderLine(
                sku=f"SKU-{rng.randrange(500):03d}",
                quantity=rng.randint(1, 3),
                unit_price_cents=rng.randint(100, 9000),
            )
            for _ in range(2)
        )
        total = sum(x.quantity * x.unit_price_cents for x in lines)
        payloads: list[Event] = [
            OrderPlaced(order_id=oid, customer_id=f"c-{rng.randrange(10_000)}", lines=lines, total_cents=total,
                        ship_to="1 Main St", deadline_at=t0 + timedelta(minutes=5)),
            OrderLineReserved(order_id=oid, sku=lines[0].sku),
            OrderLineReserved(order_id=oid, sku=lines[1].sku),
            OrderPaymentRequested(order_id=oid, customer_id="c", amount_cents=total, payment_token="tok_visa"),
            OrderPaid(order_id=oid, amount_cents=total, shipping_address="1 Main St", lines=lines),
            OrderConfirmed(order_id=oid, tracking_id=f"TRK-{oid}", skus=tuple(x.sku for x in lines)),
        ]  # fmt: skip
        for version, payload in enumerate(payloads, start=1):
            yield (
                Envelope(
                    event_id=new_id(), event_type=payload.type_name(), aggregate_type="order",
                    aggregate_id=oid, version=version, occurred_at=t0 + timedelta(milliseconds=i + version),
                    correlation_id=oid, causation_id=new_id(), schema_version=payload.schema_version,
                ),
                payload,
            )  # fmt: skip


def encode_all(stream: Iterator[tuple[Envelope, Event]]) -> list[tuple[bytes, bytes]]:
    registry = shop_registry()
    return [(env.aggregate_id.encode(), registry.encode_event(env, payload)) for env, payload in stream]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any]) -> Path:
    """Print a table and write bench/results/<name>-<date>.json."""
    table = Table(title=name)
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for row in rows:
        table.add_row(*(f"{v:,.0f}" if isinstance(v, float) and v > 100 else
                        f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))  # fmt: skip
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S")
    path = RESULTS / f"{name}-{stamp}.json"
    doc = {"benchmark": name, "at": stamp, "machine": machine(), "results": rows, **extra}
    path.write_text(json.dumps(doc, indent=2, default=str))
    console.print(f"wrote {path}")
    return path


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def produce_blocking(producer: Any, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
    """Produce, waiting for room in the local queue instead of failing when it is full."""
    while True:
        try:
            if partition is None:
                producer.produce(topic, key=key, value=value)
            else:
                producer.produce(topic, key=key, value=value, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def timed_consume(consumer: Any, expected: int) -> float:
    """Seconds to consume `expected` messages from the consumer's assignment, then close it."""
    seen = 0
    with Timer() as t:
        while seen < expected:
            seen += sum(1 for m in consumer.consume(10_000, timeout=1.0) if m.error() is None)
    consumer.close()
    return t.seconds

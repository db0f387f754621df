"""Bounded memory and restart time of one order shard over a long soak, with passivation on
(`max_aggregates`) and, as the same-run baseline, off (every aggregate in memory).

At each checkpoint (by default 20k, 50k, 100k, 150k and 200k orders) it reports the process RSS,
the aggregates in memory, and the time a restart takes: on the same node (its aggregate store is
there) and on a new node (an empty state dir: the store is rebuilt from the snapshot topic). The
shard runs in this process, alone, so the RSS is the shard's.

    python -m bench.soak [--orders 200000] [--budget 20000]
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.runtime import rss_mb, tune_gc
from actors.shard import Shard
from bench.common import Timer, bench_settings, console, report
from choreography.config import Settings
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.base import Command
from shop.messages import registry as shop_registry
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder, RecordStockReserved

BATCH = 2000


def commands(first: int, count: int) -> list[Command]:
    """`count` orders from `first`: each placed, then reserved, and every other one cancelled."""
    out: list[Command] = []
    for i in range(first, first + count):
        oid = f"soak-{i}"
        sku = f"SKU-{i % 500:03d}"
        out.append(
            PlaceOrder(order_id=oid, customer_id=f"c{i % 10_000}",
                       lines=(OrderLine(sku=sku, quantity=1 + i % 3, unit_price_cents=100 + i % 9000),))
        )  # fmt: skip
    for i in range(first, first + count):
        out.append(RecordStockReserved(order_id=f"soak-{i}", sku=f"SKU-{i % 500:03d}"))
        if i % 2:
            out.append(CancelOrder(order_id=f"soak-{i}"))
    return out


def shard(settings: Settings, budget: int | None, state_dir: Path) -> Shard:
    config = shard_config(settings, "order", 0).model_copy(
        update={"max_aggregates": budget, "state_dir": str(state_dir)}
    )
    return Shard(config, settings.aggregate("order"), shop_registry())


def rss_now_mb() -> float:
    """This process's resident set now (Linux), else its peak."""
    gc.collect()
    return rss_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def restart_s(settings: Settings, budget: int | None, state_dir: Path) -> float:
    with Timer() as t:
        restarted = shard(settings, budget, state_dir)
    restarted.close()
    return t.seconds


def soak(settings: Settings, budget: int | None, marks: list[int], workdir: Path) -> list[dict[str, Any]]:
    label = f"max_aggregates={budget:,}" if budget else "unbounded (baseline)"
    state_dir = workdir / f"state-{budget or 'all'}"
    live = shard(settings, budget, state_dir)
    rows: list[dict[str, Any]] = []
    done = 0
    started = time.perf_counter()
    for mark in marks:
        while done < mark:
            step = min(BATCH, mark - done)
            batch = commands(done, step)
            for start in range(0, len(batch), BATCH):
                outcomes = live.handle(batch[start : start + BATCH])
                assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:2]
            done += step
        in_memory = len(live.entries)
        rss = rss_now_mb()
        live.close()
        same_node = restart_s(settings, budget, state_dir)
        new_node = restart_s(settings, budget, workdir / f"new-node-{budget or 'all'}-{mark}")
        rows.append({"scenario": label, "orders": mark, "in_memory": in_memory, "rss_mb": rss,
                     "restart_same_node_s": same_node, "restart_new_node_s": new_node})  # fmt: skip
        console.print(
            f"  {label}: {mark:,} orders after {time.perf_counter() - started:.0f}s, {in_memory:,} in memory, "
            f"RSS {rss:.0f} MB, restart {same_node:.2f}s (same node) / {new_node:.2f}s (new node)"
        )
        live = shard(settings, budget, state_dir)
    live.close()
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--budget", type=int, default=20_000, help="max_aggregates of the passivating shard")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    tune_gc()
    workdir = Path(tempfile.mkdtemp(prefix="choreo-soak-"))
    marks = sorted({m for m in (20_000, 50_000, 100_000, 150_000, 200_000) if m < args.orders} | {args.orders})
    rows = []
    for budget in (args.budget, None):
        settings = bench_settings(args.config, workdir)
        services = dict(settings.services)
        # One shard owns every partition, with no deadlines firing mid-soak.
        services["order"] = services["order"].model_copy(update={"shards": 1, "deadline_s": None})
        settings = settings.model_copy(update={"services": services})
        ensure_topics(settings)
        rows += soak(settings, budget, marks, workdir)
    first, last = rows[0], rows[len(marks) - 1]
    extra = {
        "budget": args.budget,
        "rss_growth_mb": {"passivated": last["rss_mb"] - rows[min(1, len(marks) - 1)]["rss_mb"],
                          "unbounded": rows[-1]["rss_mb"] - rows[len(marks) + min(1, len(marks) - 1)]["rss_mb"]},
        "restart_ratio_last_to_first": last["restart_same_node_s"] / first["restart_same_node_s"],
    }  # fmt: skip
    report("soak", rows, extra)
    return extra


if __name__ == "__main__":
    main()

"""Bounded memory and restart time of one order shard over a long soak, with passivation on
(`max_aggregates`) and, as the same-run baseline, off (every aggregate in memory).

At each mark (by default 20k, 50k, 100k, 150k and 200k orders) it reports the process RSS, the
aggregates and command outcomes in memory, and, for the passivated shard, the time a restart
takes in a fresh process: on the same node (its aggregate store is there) and on a new node (an
empty state dir: the store is rebuilt from the snapshot topic). The shard runs in this process,
alone, so the RSS is the shard's.

    python -m bench.soak [--orders 200000] [--budget 20000]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import resource
import sys
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


def _restart_in(settings: Settings, budget: int | None, state_dir: Path, out: Any) -> None:
    tune_gc()
    with Timer() as t:
        restarted = shard(settings, budget, state_dir)
    out.put((t.seconds, rss_now_mb()))
    restarted.close()


def restart_s(settings: Settings, budget: int | None, state_dir: Path) -> tuple[float, float]:
    """Seconds a shard takes to start and rehydrate in a fresh process, as after a crash, and
    that process's RSS right after."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_restart_in, args=(settings, budget, state_dir, out))
    proc.start()
    seconds, rss = out.get(timeout=600)
    proc.join(timeout=120)
    return seconds, rss


def soak(settings: Settings, budget: int | None, marks: list[int], workdir: Path) -> list[dict[str, Any]]:
    """One shard in this process through every mark. The passivated one is restarted at each
    mark in a fresh process (timed), then reopened here; the unbounded baseline runs on without."""
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
        row: dict[str, Any] = {"scenario": label, "orders": mark, "in_memory": len(live.entries),
                               "seen": len(live.core.seen), "rss_mb": rss_now_mb(),
                               "python_blocks": sys.getallocatedblocks()}  # fmt: skip
        if budget is not None:
            live.close()
            row["restart_same_node_s"], row["restarted_rss_mb"] = restart_s(settings, budget, state_dir)
            row["restart_new_node_s"], _ = restart_s(settings, budget, workdir / f"new-node-{mark}")
            live = shard(settings, budget, state_dir)
        rows.append(row)
        console.print(f"  {label}: {mark:,} orders after {time.perf_counter() - started:.0f}s: {row}")
    live.close()
    return rows


def _soak_in(settings: Settings, budget: int | None, marks: list[int], workdir: Path, out: Any) -> None:
    tune_gc()
    out.put(soak(settings, budget, marks, workdir))


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
    ctx = multiprocessing.get_context("spawn")
    for budget in (args.budget, None):
        settings = bench_settings(args.config, workdir)
        services = dict(settings.services)
        # One shard owns every partition, with no deadlines firing mid-soak.
        services["order"] = services["order"].model_copy(update={"shards": 1, "deadline_s": None})
        settings = settings.model_copy(update={"services": services})
        ensure_topics(settings)
        out = ctx.Queue()
        proc = ctx.Process(target=_soak_in, args=(settings, budget, marks, workdir, out))  # a clean RSS per scenario
        proc.start()
        rows += out.get()
        proc.join()
    passivated, unbounded = rows[: len(marks)], rows[len(marks) :]
    extra = {
        "budget": args.budget,
        "rss_growth_mb": {
            "passivated": passivated[-1]["rss_mb"] - passivated[0]["rss_mb"],
            "unbounded": unbounded[-1]["rss_mb"] - unbounded[0]["rss_mb"],
        },
        "restart_ratio_last_to_first": passivated[-1]["restart_same_node_s"] / passivated[0]["restart_same_node_s"],
    }
    report("soak", rows, extra)
    return extra


if __name__ == "__main__":
    main()

"""Live rescaling of the order service under a steady client load: how long a rescale takes, and
the longest pause any single command saw (partitions move one at a time, so only commands of the
moving partition wait).

Same run, same load:
- steady: no rescale (the latency floor);
- live: `System.scale` 2 -> 4 and 4 -> 2 shards;
- stop-the-world (baseline): what a rescale costs without moving partitions one at a time, as with
  `choreo down` + `choreo deploy`: every shard of the service stopped, then started under the new
  count (each rehydrates from its local store and snapshots).

Orders are placed (order service only, no policies) by a client thread in calls of 20; the
figure per scenario is the slowest call and the p99 call.

    python -m bench.rescale [--preload 20000] [--phase 20]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from actors.outcomes import ShardUnavailable
from actors.shard_actor import shard_actor_name, spawn_shard
from bench.common import bench_settings, console, report
from choreography.rescale import scaled_settings, stop_actor
from choreography.system import System, reset_owners, shard_config
from shop.messages.orders import OrderLine, PlaceOrder

CALL = 20


class Load:
    """Places orders, CALL per call, in a thread; records when each call started and how long it took."""

    def __init__(self, system: System, run: str) -> None:
        self.system, self.run = system, run
        self.calls: list[tuple[float, float]] = []
        self.placed = 0
        self.errors: list[BaseException] = []
        self.resubmits: list[float] = []
        """When a call failed with ShardUnavailable and was resubmitted (the caller saw an error)."""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        while not self.stop.is_set():
            batch = [order(f"{self.run}-{i}") for i in range(self.placed, self.placed + CALL)]
            started = time.monotonic()
            while True:
                try:
                    outcomes = self.system.submit_many(batch, timeout=300)
                    break
                except ShardUnavailable:  # a stopped shard (stop-the-world): resubmit, as a caller would
                    self.resubmits.append(time.monotonic())
                    time.sleep(0.1)
                except BaseException as exc:  # reported, not raised in the thread
                    self.errors.append(exc)
                    return
            self.calls.append((started, time.monotonic() - started))
            assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:2]
            self.placed += CALL

    def window(self, since: float, until: float) -> dict[str, float]:
        latencies = sorted(d for t, d in self.calls if since <= t < until)
        errors = sum(since <= t < until for t in self.resubmits)
        if not latencies:
            return {"calls": 0, "max_call_s": 0.0, "p99_call_s": 0.0, "caller_errors": errors}
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return {"calls": len(latencies), "max_call_s": latencies[-1], "p99_call_s": p99, "caller_errors": errors}


def order(oid: str) -> PlaceOrder:
    return PlaceOrder(
        order_id=oid, customer_id="bench", lines=(OrderLine(sku="SKU-001", quantity=1, unit_price_cents=100),)
    )


def stop_the_world(system: System, shards: int) -> float:
    """Stop every order shard, then start `shards` under the new count; seconds until all serve."""
    started = time.monotonic()
    for i, actor in enumerate(system.shards["order"]):
        stop_actor(actor, shard_actor_name("order", i), system.settings.namespace)
    target = scaled_settings(system.settings, "order", shards)
    reset_owners(target, ["order"], system.owners_log)
    fresh = [spawn_shard(shard_config(target, "order", i)) for i in range(shards)]
    ray.get([a.ready.remote() for a in fresh])
    system.shards["order"], system.settings = fresh, target
    system.refresh_routes()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preload", type=int, default=20_000, help="orders placed before the load")
    parser.add_argument("--phase", type=float, default=20, help="seconds of steady load around each rescale")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    settings = bench_settings(args.config, Path(tempfile.mkdtemp(prefix="choreo-rescale-")))
    services = {"order": settings.services["order"].model_copy(update={"shards": 2, "policies": None})}
    settings = settings.model_copy(update={"services": services, "projections": {}})
    system = System(settings, metrics=False)
    for start in range(0, args.preload, 2000):
        system.submit_many([order(f"pre-{i}") for i in range(start, min(args.preload, start + 2000))])
    console.print(f"preloaded {args.preload:,} orders over {settings.partitions('order')} partitions")
    load = Load(system, "load")
    rows: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []

    def phase(scenario: str, action: Any) -> None:
        time.sleep(args.phase / 2)
        began = time.monotonic()
        detail = action()
        ended = time.monotonic()
        time.sleep(args.phase / 2)
        row = {"scenario": scenario, "seconds": ended - began, **detail, **load.window(began, time.monotonic())}
        rows.append(row)
        console.print(f"  {row}")

    def live(shards: int) -> dict[str, Any]:
        done = system.scale("order", shards)
        moves.extend(m.__dict__ for m in done.moves)
        return {"moved": len(done.moves), "longest_move_pause_s": done.longest_pause_s}

    phase("steady (no rescale)", lambda: {"moved": 0, "longest_move_pause_s": 0.0})
    phase("live 2 -> 4", lambda: live(4))
    phase("live 4 -> 2", lambda: live(2))
    phase("stop-the-world 2 -> 4 (baseline)", lambda: {"moved": 8, "longest_move_pause_s": stop_the_world(system, 4)})
    load.stop.set()
    load.thread.join(timeout=300)
    system.close()
    if load.errors:
        raise load.errors[0]
    live_max = max(r["max_call_s"] for r in rows if r["scenario"].startswith("live"))
    world = next(r for r in rows if r["scenario"].startswith("stop"))
    extra = {
        "preload": args.preload,
        "moves": moves,
        "longest_call_live_s": live_max,
        "longest_call_stop_the_world_s": world["max_call_s"],
        "ratio_live_to_stop_the_world": live_max / world["max_call_s"] if world["max_call_s"] else None,
    }
    report("rescale", rows, extra)
    return extra


if __name__ == "__main__":
    main()

"""Scaling curve: sustained orders/s with 1, 2, 4 and 8 shards per service on this machine, and on
a 3-node `ray.cluster_utils.Cluster` (simulated nodes on the same host). Draws bench/results/scaling.png.

    python -m bench.scaling [--duration 20] [--shards 1 2 4 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import ray

from actors.runtime import tune_gc
from bench.common import RESULTS, bench_settings, console, report
from bench.e2e import run_choreo, with_shards
from choreography.topology import ensure_topics


def one_point(config: str | None, shards: int, duration: float, concurrency: int, nodes: int = 1) -> dict[str, Any]:
    settings = with_shards(bench_settings(config, Path(tempfile.mkdtemp(prefix="choreo-bench-"))), shards)
    ensure_topics(settings)
    cluster = None
    if nodes > 1:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    console.print(f"[bold]{shards} shard(s) per service on {nodes} node(s)[/] ...")
    result = run_choreo(settings, duration, concurrency)
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    lat = result["latency_ms"]["start_to_terminal"]
    return {"shards": shards, "nodes": nodes, "orders_per_s": result["sagas_per_s"], "p50_ms": lat["p50"],
            "p99_ms": lat["p99"], "invariants_ok": result["invariants"]["ok"]}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=3000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--cluster-shards", type=int, default=2, help="shards per service on the 3-node cluster")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    tune_gc()
    points = [one_point(args.config, n, args.duration, args.concurrency) for n in args.shards]
    points.append(one_point(args.config, args.cluster_shards, args.duration, args.concurrency, nodes=3))
    rows = [{"scenario": f"{p['shards']} shards/service, {p['nodes']} node(s)", **p} for p in points]
    plot(points)
    report("scaling", rows, {"points": points, "baselines": {}})
    return points


def plot(points: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    local = [p for p in points if p["nodes"] == 1]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p["shards"] for p in local], [p["orders_per_s"] for p in local], marker="o", label="1 node (2 cores)")
    for p in points:
        if p["nodes"] > 1:
            ax.scatter(
                [p["shards"]], [p["orders_per_s"]], color="red", label=f"{p['nodes']}-node ray Cluster", zorder=3
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shards per service")
    ax.set_ylabel("orders/s (closed loop)")
    ax.set_title("Choreo scaling on this machine")
    ax.legend()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "scaling.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Run the whole benchmark suite and write bench/results/<date>.json plus a markdown table.

python -m bench            # e2e, rehydration, scaling, projections, dedup, soak, rescale, secure (~35 minutes)
python -m bench --quick    # the regression guard CI runs (~3 minutes): the benchmarks with same-run
                           # baselines at small sizes, each ratio against the newest committed result;
                           # exits 1 when one falls below half of it (see bench/guard.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from bench import dedup, e2e, guard, projections, rehydration, rescale, scaling, secure, soak
from bench.common import RESULTS, console, machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the regression guard: quick ratios vs the committed ones")
    args = parser.parse_args(argv)
    if args.quick:
        sys.exit(guard.main(RESULTS))
    results: dict[str, Any] = {"at": datetime.now(UTC).isoformat(), "machine": machine()}
    results["e2e"] = e2e.main(["--duration", "30", "--peer-orders", "3000"])
    results["rehydration"] = rehydration.main(["--events", "1000000"])
    results["scaling"] = scaling.main(["--duration", "20"])
    results["projections"] = projections.main(["--orders", "50000"])
    results["dedup"] = dedup.main(["--orders", "100000"])
    results["soak"] = soak.main(["--orders", "200000"])
    results["rescale"] = rescale.main(["--preload", "20000", "--phase", "20"])
    results["secure"] = secure.main(["--duration", "20", "--rounds", "2"])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / f"{stamp}.md").write_text(markdown(results))
    console.print(markdown(results))
    console.print(f"wrote {RESULTS / (stamp + '.json')} and {RESULTS / (stamp + '.md')}")


def markdown(r: dict[str, Any]) -> str:
    e, h, p = r["e2e"], r["rehydration"], r["projections"]
    c = e["choreo"]
    lines = [
        f"# Choreo benchmarks ({r['at'][:10]}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']})",
        "",
        "| scenario | figure | same-run baseline | ratio |",
        "|---|---|---|---|",
        f"| e2e orders/s (closed loop) | {c['sagas_per_s']:,.0f} | eventsourcing 9.x, cache on, SQLite WAL "
        f"synchronous=NORMAL: {e['baselines']['peer_eventsourcing_sqlite']['orders_per_s']:,.0f} | "
        f"{e['ratios']['choreo_to_peer_sqlite']:.1f}x |",
        f"| e2e orders/s (closed loop) | {c['sagas_per_s']:,.0f} | eventsourcing 9.x, cache on, in memory: "
        f"{e['baselines']['peer_eventsourcing_memory']['orders_per_s']:,.0f} | {e['ratios']['choreo_to_peer_memory']:.1f}x |",
        f"| e2e events stored/s ({e['events_per_order']:.1f} per order) | "
        f"{c['sagas_per_s'] * e['events_per_order']:,.0f} | raw Kafka floor (txns of 2,000, read_committed): "
        f"{e['baselines']['raw_kafka_floor']['messages_per_s']:,.0f} msg/s | {e['ratios']['choreo_to_raw_kafka_floor']:.2f} |",
        f"| e2e latency place -> terminal p50 / p99 | {c['latency_ms']['start_to_terminal']['p50']:,.0f} / "
        f"{c['latency_ms']['start_to_terminal']['p99']:,.0f} ms | | |",
        f"| rehydration from zero, events/s | {h['rehydration_events_per_s_from_zero']:,.0f} | raw consume "
        f"{h['baselines']['raw_kafka_consume_events_per_s']:,.0f} | {h['ratio_to_raw_consume']:.2f} |",
        f"| rehydration from snapshot (s) / recovery after kill (s) | {h['rehydration_seconds_from_snapshot']:.1f} / "
        f"{h['recovery_seconds']:.1f} | | |",
    ]
    for name in ("orders", "events_raw"):
        lines.append(
            f"| projection {name} events/s | {p[name]['projection_events_per_s']:,.0f} | raw insert "
            f"{p[name]['raw_insert_rows_per_s']:,.0f} rows/s | {p[name]['ratio_to_raw_insert']:.0%} |"
        )
    d = r["dedup"]
    lines.append(
        f"| dedup store of one shard after {d['orders']:,} orders | index {d['dedup_index_bytes'] / 1e6:.1f} MB, "
        f"topic {d['dedup_topic_bytes'] / 1e6:.1f} MB | | {d['dedup_index_bytes_per_order']:.0f} B/order |"
    )
    k = r["soak"]
    lines.append(
        f"| soak: RSS growth of one order shard to the last mark, passivated (max_aggregates "
        f"{k['budget']:,}) | {k['rss_growth_mb']['passivated']:,.0f} MB | unbounded: "
        f"{k['rss_growth_mb']['unbounded']:,.0f} MB | restart last/first {k['restart_ratio_last_to_first']:.2f}x |"
    )
    m = r["rescale"]
    lines.append(
        f"| live rescale 2 -> 4 -> 2 shards under load: slowest client call | {m['longest_call_live_s']:.2f} s | "
        f"stop-the-world rescale: {m['longest_call_stop_the_world_s']:.2f} s | "
        f"{m['ratio_live_to_stop_the_world']:.2f} |"
    )
    s = {row["scenario"]: row for row in r["secure"]["rows"]}
    plain, tls = s["plaintext"], s["SASL_SSL + SCRAM-SHA-512"]
    lines.append(
        f"| loadtest over SASL_SSL + SCRAM-SHA-512 | {tls['sagas_per_s']:,.0f} sagas/s | plaintext: "
        f"{plain['sagas_per_s']:,.0f} | {r['secure']['ratios']['loadtest_secure_to_plaintext']:.2f} |"
    )
    for point in r["scaling"]:
        lines.append(
            f"| scaling: {point['shards']} shards/service, {point['nodes']} node(s) | {point['orders_per_s']:,.0f} "
            f"orders/s | | |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

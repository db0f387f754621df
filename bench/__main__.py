"""Run the whole benchmark suite and write bench/results/<date>.json plus a markdown table.

python -m bench            # e2e, rehydration, scaling, projections, dedup, soak, rescale, secure, tracing (~45 minutes)
python -m bench --quick    # the regression guard CI runs (~4 minutes): the benchmarks with same-run
                           # baselines, with fewer peer orders, each ratio against the newest committed result;
                           # exits 1 when one falls below half of it (see bench/guard.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from bench import dedup, e2e, guard, projections, rehydration, rescale, scaling, secure, soak, tracing
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
    results["tracing"] = tracing.main(["--duration", "30", "--rounds", "2"])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / f"{stamp}.md").write_text(markdown(results))
    console.print(markdown(results))
    console.print(f"wrote {RESULTS / (stamp + '.json')} and {RESULTS / (stamp + '.md')}")


def markdown(r: dict[str, Any]) -> str:
    """The issue's targets, each beside its figure and same-run baseline, then the other figures."""
    e, h, p = r["e2e"], r["rehydration"], r["projections"]
    c, ratios, base = e["choreo"], e["ratios"], e["baselines"]
    half, read = c["half_rate_open_loop"], e["read_side"]
    rate, half_p99 = c["sagas_per_s"], half["latency_ms"]["start_to_terminal"]["p99"]
    kept_up = read["start_to_visible_p99_ms"] <= 2000
    scaling = {(pt["shards"], pt["nodes"]): pt["orders_per_s"] for pt in r["scaling"]}
    scale_ratio = scaling.get((8, 1), 0.0) / scaling[(1, 1)] if scaling.get((1, 1)) else 0.0

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    lines = [
        f"# Choreo benchmarks ({r['at'][:10]}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']})",
        "",
        "## Targets",
        "",
        "| measure | figure | same-run baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"| sustained orders/s, closed loop | {rate:,.0f} (place -> visible p99 "
        f"{read['start_to_visible_p99_ms']:,.0f} ms; projection lag at the end of the load "
        f"{read['projection_lag_at_end_of_load']:,} events) | | | >= 2,500 with visible p99 <= 2 s | "
        f"{met(rate >= 2500 and kept_up)} |",
        f"| place -> terminal p99, open loop at half that rate ({half['offered_sagas_per_s']:,.0f}/s) | "
        f"{half_p99:,.0f} ms | | | <= 500 ms | {met(half_p99 <= 500)} |",
        f"| orders/s vs the peer on SQLite | {rate:,.0f} | eventsourcing 9.x, cache on, SQLite WAL "
        f"synchronous=NORMAL: {base['peer_eventsourcing_sqlite']['orders_per_s']:,.0f} | "
        f"{ratios['choreo_to_peer_sqlite']:.2f}x | >= 6x | {met(ratios['choreo_to_peer_sqlite'] >= 6)} |",
        f"| orders/s vs the peer in memory | {rate:,.0f} | eventsourcing 9.x, cache on, POPO: "
        f"{base['peer_eventsourcing_memory']['orders_per_s']:,.0f} | {ratios['choreo_to_peer_memory']:.2f}x | >= 2x | "
        f"{met(ratios['choreo_to_peer_memory'] >= 2)} |",
        f"| events stored/s ({e['events_per_order']:.1f} per order) | {rate * e['events_per_order']:,.0f} | raw Kafka "
        f"floor (txns of 2,000, read_committed): {base['raw_kafka_floor']['messages_per_s']:,.0f} msg/s | "
        f"{ratios['choreo_to_raw_kafka_floor']:.2f} | >= 0.25 | {met(ratios['choreo_to_raw_kafka_floor'] >= 0.25)} |",
        f"| rehydration of one shard from zero, events/s | {h['rehydration_events_per_s_from_zero']:,.0f} | raw "
        f"read_committed consume of the partition: {h['baselines']['raw_kafka_consume_events_per_s']:,.0f} | "
        f"{h['ratio_to_raw_consume']:.2f} | >= 0.8 | {met(h['ratio_to_raw_consume'] >= 0.8)} |",
    ]
    for name in ("orders", "events_raw"):
        q = p[name]
        ok = q["projection_events_per_s"] >= 150_000 and q["ratio_to_raw_insert"] >= 0.5
        lines.append(
            f"| projection {name}, events/s | {q['projection_events_per_s']:,.0f} | raw insert of the same rows: "
            f"{q['raw_insert_rows_per_s']:,.0f} rows/s | {q['ratio_to_raw_insert']:.0%} | >= 150k/s and >= 50% | "
            f"{met(ok)} |"
        )
    lines += [
        f"| scaling: 8 shards/service vs 1, on 2 cores | {scaling.get((8, 1), 0):,.0f} orders/s | 1 shard/service: "
        f"{scaling.get((1, 1), 0):,.0f} | {scale_ratio:.0%} | >= 80% | {met(scale_ratio >= 0.8)} |",
        "",
        "## Other figures",
        "",
        "| scenario | figure | same-run baseline | ratio |",
        "|---|---|---|---|",
        f"| closed loop place -> terminal p50 / p99 | {c['latency_ms']['start_to_terminal']['p50']:,.0f} / "
        f"{c['latency_ms']['start_to_terminal']['p99']:,.0f} ms | | |",
        f"| orders/s vs the peer's defaults (no cache, SQLite synchronous=FULL) | {rate:,.0f} | "
        f"{base['peer_eventsourcing_sqlite_defaults']['orders_per_s']:,.0f} | "
        f"{ratios['choreo_to_peer_sqlite_defaults']:.1f}x |",
        f"| rehydration from snapshot (s) / recovery after kill (s) | {h['rehydration_seconds_from_snapshot']:.1f} / "
        f"{h['recovery_seconds']:.1f} | | |",
    ]
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
    for scenario, cost in r.get("tracing", {}).get("costs", {}).items():
        lines.append(f"| tracing: {scenario} | cost {cost:.1%} | tracing off | |")
    for point in r["scaling"]:
        lines.append(
            f"| scaling: {point['shards']} shards/service, {point['nodes']} node(s) | {point['orders_per_s']:,.0f} "
            f"orders/s | | |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""The CI guard against gross performance regressions (`python -m bench --quick`).

It runs the benchmarks that carry same-run baselines (fewer peer orders), then compares each ratio with
the same ratio in the newest committed result of that benchmark in bench/results. Ratios only:
absolute rates on a shared 2-core machine mean little from one run to the next. A ratio below half
of its committed value fails the run; anything above passes, so noise never blocks a landing.
Quick runs write their results to bench/results/quick/ (not committed), so a quick run never
becomes the baseline of the next one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import common

FAIL_BELOW = 0.5
"""A ratio fails when it falls below this share of its committed value."""


@dataclass(frozen=True)
class Guarded:
    bench: str
    path: tuple[str, ...]
    label: str

    def value(self, result: dict[str, Any]) -> float | None:
        node: Any = result
        for key in self.path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) else None


GUARDED = (
    Guarded("e2e", ("ratios", "choreo_to_peer_sqlite"), "orders/s vs the eventsourcing peer on SQLite"),
    Guarded("e2e", ("ratios", "choreo_to_peer_memory"), "orders/s vs the eventsourcing peer in memory"),
    Guarded("e2e", ("ratios", "choreo_to_raw_kafka_floor"), "events stored/s vs the raw Kafka floor"),
    Guarded("rehydration", ("ratio_to_raw_consume",), "rehydration vs a raw consume of the partition"),
    Guarded("projections", ("orders", "ratio_to_raw_insert"), "projection orders vs a raw insert"),
    Guarded("projections", ("events_raw", "ratio_to_raw_insert"), "projection events_raw vs a raw insert"),
)


def newest_result(results: Path, bench: str) -> tuple[str, dict[str, Any]] | None:
    """The newest `<bench>-<timestamp>.json` directly in `results` (the committed ones), by name."""
    files = sorted(results.glob(f"{bench}-*.json"))
    return (files[-1].name, json.loads(files[-1].read_text())) if files else None


def baselines(results: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    return {b: found for b in {g.bench for g in GUARDED} if (found := newest_result(results, b)) is not None}


def check(committed: dict[str, tuple[str, dict[str, Any]]], current: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per guarded ratio: `ok` unless it fell below FAIL_BELOW of its committed value."""
    verdicts = []
    for g in GUARDED:
        source, base = committed.get(g.bench, ("", {}))
        before, now = g.value(base), g.value(current.get(g.bench, {}))
        if now is None:
            status = "missing"  # the quick run did not produce it: a broken benchmark
        elif before is None or before <= 0:
            status = "no baseline"
        else:
            status = "ok" if now >= FAIL_BELOW * before else "REGRESSED"
        verdicts.append({"ratio": g.label, "benchmark": g.bench, "committed": before, "baseline_file": source,
                         "now": now, "status": status})  # fmt: skip
    return verdicts


def failed(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in verdicts if v["status"] in ("REGRESSED", "missing")]


def run_quick() -> dict[str, dict[str, Any]]:
    """The benchmarks with same-run baselines; their results go to results/quick/. The Choreo side
    runs at the suite's sizes, since its ratios drift with size (warm-up, fixed costs); only the
    peers run fewer orders, which their steady per-order rates allow."""
    from bench import e2e, projections, rehydration

    common.RESULTS = common.RESULTS / "quick"
    return {
        "e2e": e2e.main(["--duration", "30", "--peer-orders", "1000"]),
        "rehydration": rehydration.main(["--events", "1000000"]),
        "projections": projections.main(["--orders", "10000"]),
    }


def main(results: Path) -> int:
    committed = baselines(results)  # read before the quick run writes anything
    verdicts = check(committed, run_quick())
    table = Table(title=f"Regression guard: a ratio fails below {FAIL_BELOW:.0%} of its committed value")
    for col in ("ratio", "committed", "now", "status", "baseline file"):
        table.add_column(col, justify="left" if col in ("ratio", "baseline file") else "right")
    for v in verdicts:
        table.add_row(v["ratio"], _fmt(v["committed"]), _fmt(v["now"]), v["status"], v["baseline_file"])
    common.console.print(table)
    out = common.RESULTS / f"guard-{datetime.now(UTC).strftime('%Y-%m-%dT%H-%M-%S')}.json"
    out.write_text(json.dumps(verdicts, indent=2))
    bad = failed(verdicts)
    common.console.print(f"{len(bad)} of {len(verdicts)} ratios regressed grossly" if bad else "no gross regression")
    return 1 if bad else 0


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"

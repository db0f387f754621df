"""The CI regression guard: a ratio fails only below half of its newest committed value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.guard import GUARDED, baselines, check, failed

E2E = {"ratios": {"choreo_to_peer_sqlite": 4.0, "choreo_to_peer_memory": 1.0, "choreo_to_raw_kafka_floor": 0.1}}
REHYDRATION = {"ratio_to_raw_consume": 0.4}
PROJECTIONS = {"orders": {"ratio_to_raw_insert": 0.2}, "events_raw": {"ratio_to_raw_insert": 0.1}}


def _write(results: Path, name: str, doc: dict[str, Any]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / name).write_text(json.dumps(doc))


def test_the_newest_committed_result_of_each_benchmark_is_the_baseline(tmp_path: Path) -> None:
    _write(tmp_path, "e2e-2026-11-26T22-04-28.json", {"ratios": {"choreo_to_peer_sqlite": 99.0}})
    _write(tmp_path, "e2e-2026-11-27T21-02-11.json", E2E)
    _write(tmp_path, "rehydration-2026-11-26T22-05-31.json", REHYDRATION)
    _write(tmp_path / "quick", "e2e-2026-11-28T00-00-00.json", {"ratios": {"choreo_to_peer_sqlite": 0.1}})
    _write(tmp_path, "2026-11-27.json", {"e2e": {}})  # the suite's summary is not a benchmark result
    found = baselines(tmp_path)
    assert found["e2e"] == ("e2e-2026-11-27T21-02-11.json", E2E)
    assert found["rehydration"][1] == REHYDRATION
    assert "projections" not in found


def test_only_a_ratio_below_half_of_its_baseline_fails() -> None:
    committed = {
        "e2e": ("e2e.json", E2E),
        "rehydration": ("r.json", REHYDRATION),
        "projections": ("p.json", PROJECTIONS),
    }
    noisy = {
        "e2e": {
            "ratios": {"choreo_to_peer_sqlite": 2.0, "choreo_to_peer_memory": 0.6, "choreo_to_raw_kafka_floor": 0.3}
        },
        "rehydration": {"ratio_to_raw_consume": 0.19},  # below 0.2: a gross regression
        "projections": PROJECTIONS,
    }
    verdicts = {v["ratio"]: v for v in check(committed, noisy)}
    assert len(verdicts) == len(GUARDED)
    assert [v["benchmark"] for v in failed(list(verdicts.values()))] == ["rehydration"]
    assert verdicts["rehydration vs a raw consume of the partition"]["status"] == "REGRESSED"
    assert verdicts["orders/s vs the eventsourcing peer on SQLite"]["status"] == "ok"  # exactly half passes


def test_a_missing_baseline_passes_and_a_missing_figure_fails() -> None:
    current = {"e2e": E2E, "rehydration": REHYDRATION, "projections": {"orders": {"ratio_to_raw_insert": 0.2}}}
    verdicts = check({"e2e": ("e2e.json", E2E)}, current)
    statuses = {v["ratio"]: v["status"] for v in verdicts}
    assert statuses["rehydration vs a raw consume of the partition"] == "no baseline"
    assert statuses["projection events_raw vs a raw insert"] == "missing"
    assert [v["ratio"] for v in failed(verdicts)] == ["projection events_raw vs a raw insert"]

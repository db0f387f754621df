"""`choreo loadtest` as a user runs it: a short open-loop run whose JSON report must be complete
(with the CPU cost per role) and whose invariant check must pass. The numbers themselves are not
asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _isolated_env(tmp_path: Path, kafka_bootstrap: str) -> dict[str, str]:
    """The environment of a CLI run with its own topics, Ray namespace and ClickHouse."""
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "CHOREO_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CHOREO_TOPIC_PREFIX": f"smoke{run}-",
        "CHOREO_NAMESPACE": f"smoke{run}",
        "CHOREO_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}",
        "COLUMNS": "200",  # tables and their titles on one line each
    }


def test_short_loadtest_writes_a_complete_report(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = _isolated_env(tmp_path, kafka_bootstrap)
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "choreography.cli", "loadtest", "--config", str(REPO / "cluster.yaml"),
           "--duration", "15", "--rate", "80", "--mix", "declines=0.3", "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "loadtest.json").read_text())
    assert report["sagas"] >= 80  # the load really ran; how many it offered on a busy machine is a figure, not a check
    assert report["completed"] == report["sagas"]
    assert report["stuck"] == 0
    assert report["sagas_per_s"] > 0
    for kind in ("start_to_terminal", "start_to_visible"):
        lat = report["latency_ms"][kind]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["count"] == report["sagas"]
    assert report["invariants"]["ok"] is True
    assert report["invariants"]["dead_letters"] == 0
    assert report["invariants"]["events_audited"] > report["sagas"] * 5
    assert set(report["outcomes"]) == {"confirmed", "rejected", "cancelled"}
    assert report["stages_per_s"]["OrderPlaced"] > 0
    assert "baselines" in report
    assert report["workload"]["path"] == "shop.workload:OrderMix"
    assert report["workload"]["mix"] == {"declines": "0.3"}
    assert report["outcomes"]["cancelled"] > report["outcomes"]["rejected"]  # declined cards (30%) cancel
    assert report["timeline"] and report["timeline"][-1]["completed"] == report["sagas"]
    for png in ("throughput.png", "latency.png", "lag.png", "cpu.png"):
        assert (out / png).stat().st_size > 1000
    # The live map: every policy and projection edge labelled with its consumer's rate and lag under load.
    the_map = report["map"]
    assert the_map.count("ev/s, lag") == the_map.count(" -- ") > 20, the_map
    busy = re.search(r"inventory: reserve_each_line<br/>([\d,]+) ev/s", the_map)
    assert busy is not None and int(busy.group(1).replace(",", "")) > 0, the_map
    assert "```mermaid" in (out / "map.md").read_text()

    cpu = {row["role"]: row for row in report["cpu"]}
    roles = {"Kafka broker", "order shards", "inventory shards", "payment shards", "shipping shards",
             "policy runners", "projection hosts", "Ray daemons", "client", "total"}  # fmt: skip
    assert set(cpu) == roles, cpu.keys()
    assert all(cpu[role]["processes"] >= 1 and cpu[role]["cpu_s"] > 0 for role in roles), cpu
    assert cpu["total"]["cpu_s"] == pytest.approx(sum(row["cpu_s"] for role, row in cpu.items() if role != "total"))
    assert cpu["total"]["cpu_ms_per_order"] == pytest.approx(1000 * cpu["total"]["cpu_s"] / report["completed"])
    assert "CPU per role over the run" in proc.stdout and "CPU ms/order" in proc.stdout
    # every order is placed in a transaction of an order shard, and its saga goes through a policy
    assert cpu["order shards"]["transactions"] > 0 and cpu["policy runners"]["transactions"] > 0
    assert cpu["Kafka broker"]["transactions"] == 0
    assert cpu["total"]["transactions"] == sum(row["transactions"] for role, row in cpu.items() if role != "total")


def test_the_demo_runs_sagas_end_to_end_and_summarises_them(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = _isolated_env(tmp_path, kafka_bootstrap)
    cmd = [sys.executable, "-m", "choreography.cli", "demo", "--config", str(REPO / "cluster.yaml"),
           "--sagas", "60", "--no-start-kafka"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "60/60 sagas ended" in proc.stdout
    assert "Summary (read back from ClickHouse)" in proc.stdout and "confirmed" in proc.stdout
    assert "OrderPlaced" in proc.stdout  # the first saga's trail from events_raw

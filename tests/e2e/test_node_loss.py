"""Node loss on a 3-node `ray.cluster_utils.Cluster`: shards spread across the nodes, the
embedded-ClickHouse projection host pinned to the head node (the simulated nodes share one disk),
a worker node removed mid-load. Its actors restart on the survivors and rehydrate, no caller sees
an error, and once the load settles every invariant holds, in the log and in ClickHouse.

The run is in its own process (tests/e2e/node_loss_run.py): a driver joins one Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_losing_a_worker_node_mid_load_keeps_every_invariant(tmp_path: Path, kafka_bootstrap: str) -> None:
    # ray.cluster_utils records its head in Ray's "current cluster" file, where a later ray.init()
    # without an address would look; a run that dies before its shutdown must not leave it there.
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = current.read_text() if current.exists() else None
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.e2e.node_loss_run", str(tmp_path), kafka_bootstrap],
            cwd=REPO, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
    finally:
        if before is None:
            current.unlink(missing_ok=True)
        else:
            current.write_text(before)
    assert proc.returncode == 0, proc.stderr[-5000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nnode loss: {json.dumps(seen)}")
    assert seen["errors"] == [], "no caller sees an error"
    assert len(seen["shard_nodes_before"]) >= 2, "shards spread across nodes"
    assert seen["projection_host_before"] == seen["head"] == seen["projection_host_after"], "pinned to the head"
    assert any("-shard-" in name for name in seen["lost_actors"]), "the removed node ran shards"
    assert 0 < seen["removed_after_orders"] < 1500, "removed mid-load"
    assert seen["actors_on_victim_after"] == [] and seen["alive_after"] == seen["alive_before"], "restarted elsewhere"
    assert seen["audit_ok"], seen["violations"]
    assert seen["orders"] == 1500 and seen["terminal_in_clickhouse"] == 1500
    assert seen["dead_letters"] == 0

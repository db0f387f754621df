"""The deployment lifecycle on a Ray cluster of its own (`ray start --head`, as a user runs it):
deploy -> status -> a driver killed mid-session -> connect by name from a new driver -> submit ->
rescale -> a rolling upgrade under load -> down -> deploy again, with the state intact."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import isolated_metadata

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A Ray head in its own temp dir, ended with its `ray start --block` process (a plain
    `ray stop` would also end the test session's own Ray)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp}", "--num-cpus=2",
         "--disable-usage-stats", "--include-dashboard=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([RAY, "status", f"--address={address}"], env=_ray_env(address),
                             capture_output=True).returncode != 0:  # fmt: skip
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _ray_env(address: str) -> dict[str, str]:
    # `ray start --head` turns on token authentication; drivers send the token in this mode.
    return {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "token"}


@pytest.fixture
def cluster_file(tmp_path: Path, kafka_bootstrap: str) -> Path:
    meta = isolated_metadata(tmp_path, kafka_bootstrap, partitions=4, letter="d")
    for spec in meta["services"].values():
        spec["shards"] = 1
    # Declared code outside the installed packages, which the rolling upgrade below changes.
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "upgrade_probe.py").write_text("from shop.workload import OrderMix as WORKLOAD  # v1\n")
    meta["python_path"] = [str(tmp_path / "code")]
    meta["workload"] = "upgrade_probe:WORKLOAD"
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"metadata": meta}))
    return path


def choreo(address: str, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "choreography.cli", *args, "-c", str(config)],
        env={**_ray_env(address), "COLUMNS": "200"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


DRIVER = """
import json, sys, time
from choreography.system import connect
from shop.messages import AddStock

system = connect(name=sys.argv[1])
sku, quantity = sys.argv[2], int(sys.argv[3])
if quantity:
    system.submit(AddStock(sku=sku, quantity=quantity))
state, version = system.state("inventory", sku)
print(json.dumps({"added": state.added, "version": version}), flush=True)
if sys.argv[4:] == ["hang"]:
    time.sleep(600)  # killed by the test
system.close()
"""


LOAD = """
import json, sys, time
from pathlib import Path
from choreography.system import connect
from shop.messages import AddStock

system = connect(name=sys.argv[1])
sku, stop = sys.argv[2], Path(sys.argv[3])
ok, errors = 0, []
while not stop.exists():
    try:
        system.submit(AddStock(sku=sku, quantity=1), timeout=120)
        ok += 1
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.05)
print(json.dumps({"ok": ok, "errors": errors}), flush=True)
system.close()
"""


def driver(address: str, namespace: str, sku: str, quantity: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, namespace, sku, str(quantity)], env=_ray_env(address),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def status(address: str, config: Path) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(choreo(address, config, "status", "--json").stdout)}


def test_deploy_status_driver_loss_connect_down_and_deploy_again(ray_head: str, cluster_file: Path) -> None:
    namespace = yaml.safe_load(cluster_file.read_text())["metadata"]["namespace"]
    sku = f"SKU-{uuid.uuid4().hex[:6]}"

    deployed = choreo(ray_head, cluster_file, "deploy")
    assert "deployed" in deployed.stdout
    actors = status(ray_head, cluster_file)
    shards = {name: row for name, row in actors.items() if row["role"] == "shard"}
    assert set(shards) == {"order-shard-0", "inventory-shard-0", "payment-shard-0", "shipping-shard-0"}
    assert all(row["state"] == "ALIVE" for row in actors.values()), actors
    assert all(row["phase"] == "serving" and row["partitions"] == [0, 1, 2, 3] for row in shards.values())
    assert all(row["rss_mb"] and row["node"] and row["lag"] == 0 for row in shards.values())

    # A driver that is killed while attached: the deployment does not go with it.
    doomed = subprocess.Popen([sys.executable, "-c", DRIVER, namespace, sku, "7", "hang"], env=_ray_env(ray_head),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert doomed.stdout is not None
    assert json.loads(doomed.stdout.readline())["added"] == 7
    doomed.kill()
    doomed.wait()

    assert driver(ray_head, namespace, sku, 3) == {"added": 10, "version": 2}
    # The CLI in the deployment's namespace attaches to it, and leaves it running when it exits.
    choreo(ray_head, cluster_file, "submit", "AddStock", json.dumps({"sku": sku, "quantity": 5}))
    after = status(ray_head, cluster_file)
    assert all(row["state"] == "ALIVE" and row["restarts"] == 0 for row in after.values()), after
    assert {n: r["pid"] for n, r in after.items()} == {n: r["pid"] for n, r in actors.items()}

    # Redeploying unchanged keeps every actor; another shard count is applied live, and so is
    # `choreo scale` (shards and policy runners).
    choreo(ray_head, cluster_file, "deploy")
    assert {n: r["pid"] for n, r in status(ray_head, cluster_file).items()} == {n: r["pid"] for n, r in after.items()}
    doc = yaml.safe_load(cluster_file.read_text())
    doc["metadata"]["services"]["inventory"]["shards"] = 2
    rescaled = cluster_file.with_name("rescaled.yaml")
    rescaled.write_text(yaml.safe_dump(doc))
    choreo(ray_head, rescaled, "deploy")
    two = status(ray_head, cluster_file)  # the file says 1 shard: status shows what runs
    assert (two["inventory-shard-0"]["partitions"], two["inventory-shard-1"]["partitions"]) == ([0, 2], [1, 3])
    assert two["inventory-shard-0"]["pid"] == after["inventory-shard-0"]["pid"], "rescaled live, not restarted"
    assert driver(ray_head, namespace, sku, 1) == {"added": 16, "version": 4}
    back = json.loads(
        choreo(ray_head, cluster_file, "scale", "inventory", "--shards", "1", "--runners", "2", "--json").stdout
    )["shards"]
    assert (back["before"], back["after"], len(back["moves"])) == (2, 1, 2)
    one = status(ray_head, cluster_file)
    assert "inventory-shard-1" not in one and one["policy-inventory-1"]["state"] == "ALIVE"
    assert one["inventory-shard-0"]["partitions"] == [0, 1, 2, 3]
    unknown = choreo(ray_head, cluster_file, "scale", "nowhere", "--shards", "2", check=False)
    assert unknown.returncode == 1 and "unknown service 'nowhere'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    # New code: `deploy` restarts the actors one at a time while a driver keeps submitting.
    stop = cluster_file.with_name("stop-load")
    load = subprocess.Popen([sys.executable, "-c", LOAD, namespace, f"{sku}-load", str(stop)], env=_ray_env(ray_head),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    probe = cluster_file.with_name("code") / "upgrade_probe.py"
    probe.write_text(probe.read_text().replace("# v1", "# v2"))
    before = status(ray_head, cluster_file)
    upgraded = choreo(ray_head, cluster_file, "deploy")
    stop.touch()
    out, err = load.communicate(timeout=300)
    assert load.returncode == 0, err[-3000:]
    placed = json.loads(out.strip().splitlines()[-1])
    assert placed["errors"] == [] and placed["ok"] > 0, placed
    rolled = status(ray_head, cluster_file)
    assert all(
        row["state"] == "ALIVE"
        and row["restarts"] == before[name]["restarts"] + 1
        and row["pid"] != before[name]["pid"]
        for name, row in rolled.items()
        if row["role"] != "deployment"
    ), (before, rolled, upgraded.stdout)
    assert driver(ray_head, namespace, f"{sku}-load", 0)["added"] == placed["ok"], "every accepted command, once"
    choreo(ray_head, cluster_file, "deploy")  # unchanged code: nothing restarts
    assert {n: r["restarts"] for n, r in status(ray_head, cluster_file).items()} == {
        n: r["restarts"] for n, r in rolled.items()
    }

    stopped = choreo(ray_head, cluster_file, "down")
    assert f"stopped {len(actors)} actors" in stopped.stdout, "the file's runner count, deployed again"
    gone = choreo(ray_head, cluster_file, "status", check=False)
    assert gone.returncode == 1 and "no Choreo deployment" in gone.stderr and "Traceback" not in gone.stderr

    choreo(ray_head, cluster_file, "deploy")
    assert driver(ray_head, namespace, sku, 0) == {"added": 16, "version": 4}, "state intact after down and deploy"
    choreo(ray_head, cluster_file, "down")

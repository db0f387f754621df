"""The node-loss run of tests/e2e/test_node_loss.py, in a process of its own (a Ray driver joins
one cluster per process): a 3-node `ray.cluster_utils.Cluster`, shards spread across it, the
embedded-ClickHouse projection host pinned to the head node, a worker node removed mid-load.
Prints one JSON line with what it saw; the test asserts on it.

    python -m tests.e2e.node_loss_run WORKDIR BOOTSTRAP
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from choreography.config import Settings, settings_from_metadata
from choreography.deployment import status
from choreography.system import System
from events.log.reader import read_topic
from shop.invariants import audit
from shop.messages import AddStock, OrderLine, PlaceOrder
from tests.integration.conftest import isolated_metadata

ORDERS = 1500
SKUS = [f"SKU-{i}" for i in range(20)]


def make_settings(workdir: Path, bootstrap: str) -> Settings:
    meta = isolated_metadata(workdir, bootstrap, partitions=6, letter="n")
    for spec in meta["services"].values():
        spec.update(shards=3, snapshot_every=300)
    meta["services"]["order"]["deadline_s"] = 120
    return settings_from_metadata(meta, env={})


def placement(settings: Settings) -> dict[str, str]:
    return {s.name: s.node for s in status(settings) if s.state == "ALIVE"}


def main(workdir: Path, bootstrap: str) -> dict[str, Any]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        return run(cluster, workdir, bootstrap)
    finally:
        ray.shutdown()
        cluster.shutdown()


def run(cluster: Cluster, workdir: Path, bootstrap: str) -> dict[str, Any]:
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    settings = make_settings(workdir, bootstrap)
    ray.init(address=cluster.address, namespace=settings.namespace, log_to_driver=False)
    head = next(n["NodeID"][:8] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
    system = System(settings)
    before = placement(settings)
    assert all(o.ok for o in system.submit_many([AddStock(sku=s, quantity=1_000_000) for s in SKUS]))

    run = uuid.uuid4().hex[:6]
    orders = [
        PlaceOrder(order_id=f"{run}-{i}", customer_id=f"c{i % 50}",
                   lines=(OrderLine(sku=SKUS[i % len(SKUS)], quantity=1, unit_price_cents=500),))
        for i in range(ORDERS)
    ]  # fmt: skip
    answered: list[int] = [0]
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            for start in range(0, ORDERS, 100):
                outcomes = system.submit_many(orders[start : start + 100], timeout=300)
                assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
                answered[0] += len(outcomes)
        except BaseException as exc:
            errors.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    while answered[0] < ORDERS // 3 and driver.is_alive():
        time.sleep(0.2)
    # The worker node that runs the most shards goes.
    shard_nodes = [node for name, node in before.items() if "-shard-" in name]
    victim = max(workers, key=lambda w: shard_nodes.count(w.node_id[:8]))
    lost = sorted(name for name, node in before.items() if node == victim.node_id[:8])
    cluster.remove_node(victim)
    removed_at = answered[0]
    driver.join(timeout=600)

    # Settle: every order terminal, the read side caught up.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        log = [
            e
            for svc in settings.services
            for e in read_topic(
                settings.kafka.client_config(), settings.topic_name(f"{svc}-events"), settings.registry()
            )
        ]
        result = audit(log, order_ids=[o.order_id for o in orders])
        rows = system.query("SELECT count() FROM orders FINAL WHERE status IN ('confirmed', 'cancelled', 'rejected')")
        if result.ok and rows.rows[0][0] >= ORDERS:
            break
        time.sleep(3)
    after = placement(settings)
    report = {
        "errors": [repr(e) for e in errors],
        "removed_after_orders": removed_at,
        "head": head,
        "victim": victim.node_id[:8],
        "lost_actors": lost,
        "shard_nodes_before": sorted({n for name, n in before.items() if "-shard-" in name}),
        "projection_host_before": before.get("projection-host"),
        "projection_host_after": after.get("projection-host"),
        "actors_on_victim_after": sorted(name for name, n in after.items() if n == victim.node_id[:8]),
        "alive_after": len(after),
        "alive_before": len(before),
        "audit_ok": result.ok,
        "violations": result.violations[:5],
        "orders": result.orders,
        "terminal_in_clickhouse": rows.rows[0][0],
        "dead_letters": len(system.dead_letters()),
    }
    system.close()
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])), flush=True)

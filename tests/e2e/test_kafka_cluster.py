"""`choreo kafka start --brokers 3`: three KRaft brokers on one machine, driven through the CLI as a
user would. Topics get replication factor 3 and min.insync.replicas 2 uncapped; `status` shows
every broker, the controller and under-replicated partitions; one broker stops and starts again
(`--broker N`) while writes with acks=all go on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from events.log.kafka_io import producer_config, write_outage
from tests.e2e.faults import free_ports

REPO = Path(__file__).resolve().parents[2]


def test_a_three_broker_cluster_keeps_writing_through_the_loss_of_one(tmp_path: Path) -> None:
    port = free_ports(6)
    where = ["--port", str(port), "--data-dir", str(tmp_path / "kafka")]

    def choreo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "choreography.cli", "kafka", *args, *where],
            cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip

    try:
        started = choreo("start", "--brokers", "3", "--heap", "384m")
        assert started.returncode == 0, started.stderr + started.stdout
        bootstrap = ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(3))
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = admin.list_topics(timeout=10).topics["order-events"]
        assert all(len(p.replicas) == 3 for p in topic.partitions.values()), "replication factor 3, uncapped"
        resource = ConfigResource(ConfigResource.Type.TOPIC, "order-events")
        config = admin.describe_configs([resource])[resource].result()
        assert config["min.insync.replicas"].value == "2"
        status = choreo("status")
        assert status.returncode == 0 and status.stdout.count("running") == 3, status.stdout
        assert "under-replicated partitions: 0" in status.stdout

        stopped = choreo("stop", "--broker", "2")
        assert stopped.returncode == 0 and "[2]" in stopped.stdout, stopped.stdout
        deadline = time.monotonic() + 60
        while "under-replicated partitions: 0" in (degraded := choreo("status")).stdout:
            assert time.monotonic() < deadline, "node 2's replicas never fell out of sync"
            time.sleep(1)
        assert degraded.stdout.count("running") == 2 and "stopped" in degraded.stdout
        outage = write_outage({"bootstrap.servers": bootstrap})
        assert outage is not None and outage.startswith(f"2 of 3 Kafka brokers reachable (down: 127.0.0.1:{port + 2})")
        producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
        delivered: list[object] = []
        for i in range(100):
            producer.produce("order-events", key=b"k", value=b"v%d" % i, on_delivery=lambda e, m: delivered.append(e))
        assert producer.flush(60) == 0 and delivered == [None] * 100, "acks=all writes go on with 2 of 3 in sync"

        assert choreo("start", "--broker", "2").returncode == 0
        deadline = time.monotonic() + 120
        while "under-replicated partitions: 0" not in (healed := choreo("status")).stdout:
            assert time.monotonic() < deadline, healed.stdout
            time.sleep(2)
        assert healed.stdout.count("running") == 3
        assert write_outage({"bootstrap.servers": bootstrap}) is None
    finally:
        ended = choreo("stop")
    after = choreo("status")
    assert after.returncode == 1, ended.stdout + ended.stderr + after.stdout

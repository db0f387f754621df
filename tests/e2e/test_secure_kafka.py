"""Secured Kafka: `choreo kafka start --secure` serves SASL_SSL with SCRAM-SHA-512 (a throwaway CA
from keytool, the users from Kafka's storage tool). Plaintext and a wrong password are refused; a
small saga runs end to end over SASL_SSL, its actors reading the password from the file their
settings name. The password, a planted canary, appears in no log (Ray's, the broker's), no CLI
output, no exception message and nothing the actors are given."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import ray
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from ray import cloudpickle

from choreography.broker.secure import SecureMaterial
from choreography.config import settings_from_metadata
from events.log.kafka_io import admin_config
from shop.invariants import audit
from tests.e2e.faults import free_ports
from tests.integration.conftest import isolated_metadata, read_log
from tests.integration.workload import run_workload, wait_projections_caught_up, wait_settled

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("order", "inventory", "payment", "shipping")


def test_a_saga_runs_over_sasl_ssl_and_the_password_shows_up_nowhere(tmp_path: Path, start_system) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    port, data = free_ports(2), tmp_path / "kafka"
    bootstrap = f"127.0.0.1:{port}"
    outputs: list[str] = []

    def choreo(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "choreography.cli", "kafka", *args, "--port", str(port), "--data-dir", str(data)],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "CHOREO_KAFKA_PASSWORD": canary, "COLUMNS": "200"},
        )  # fmt: skip
        outputs.append(done.stdout + done.stderr)
        return done

    started = choreo("start", "--secure", "--heap", "384m")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "SASL_SSL" in started.stdout and "${file:" in started.stdout, started.stdout
    material = SecureMaterial(data / "secure")
    assert material.client_password_file.read_text().strip() == canary, "the user's password, from the variable"
    try:
        with pytest.raises(KafkaException):
            AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=5)
        wrong = {**admin_config({"bootstrap.servers": bootstrap, **material.client_security()}), "sasl.password": "no"}
        with pytest.raises(KafkaException) as denied:
            AdminClient(wrong).list_topics(timeout=10)
        errors = [str(denied.value)]

        meta = isolated_metadata(tmp_path, bootstrap, partitions=2, letter="s")
        meta["kafka"] = {"bootstrap_servers": bootstrap, "security": material.client_security()}
        settings = settings_from_metadata(meta, env={})
        assert canary.encode() not in cloudpickle.dumps(settings), "actors get the file's path, not the password"
        system = start_system(settings)
        placed = run_workload(system, uuid.uuid4().hex[:6], 30)
        wait_settled(system, [p.order_id for p in placed])
        log = [e for svc in SERVICES for e in read_log(settings, f"{svc}-events")]
        result = audit(log, order_ids=[p.order_id for p in placed])
        assert result.ok and result.orders == len(placed), result.violations[:5]
        wait_projections_caught_up(system, log)
        assert system.query("SELECT count(), uniqExact(event_id) FROM events_raw").rows[0] == (len(log), len(log))
        status = choreo("status")
        assert status.returncode == 0 and "SASL_SSL" in status.stdout, status.stdout
        ray_logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    finally:
        choreo("stop")

    files = [p for p in ray_logs.rglob("*") if p.is_file()]
    files += [p for p in data.rglob("*") if p.is_file() and p != material.client_password_file]
    assert any(p.name == "broker.log" for p in files) and any(p.suffix == ".out" for p in files), files[:20]
    leaks = [str(p) for p in files if canary.encode() in p.read_bytes()]
    leaks += [text[:200] for text in outputs + errors if canary in text]
    assert leaks == [], f"the password leaked into {leaks}"
    assert canary.encode() in material.client_password_file.read_bytes(), "the scan finds it where it is kept"

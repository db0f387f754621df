"""The second domain, money transfers (examples/transfers), written only against Choreo's
public API: 1,500 transfers on real Kafka, Ray and ClickHouse while shards and policy runners of
both services are killed at random. From the log: money is conserved, no balance goes negative,
each transfer ends once and moved money only if it completed; ClickHouse agrees with the log."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import yaml

from choreography.config import Settings, settings_from_metadata
from choreography.system import System
from choreography.workload import load_workload
from events import Command
from tests.integration.conftest import read_log

REPO = Path(__file__).resolve().parents[2]
TRANSFERS = REPO / "examples" / "transfers" / "cluster.yaml"
COUNT = 1500
BATCH = 150
KILL_EVERY = 150


def transfer_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    metadata = yaml.safe_load(TRANSFERS.read_text())["metadata"]
    run = uuid.uuid4().hex[:8]
    metadata.update(
        namespace=f"x{run}", topic_prefix=f"x{run}-", kafka={"bootstrap_servers": kafka_bootstrap},
        clickhouse={"dsn": f"chdb://{tmp_path / 'clickhouse'}"}, state_dir=str(tmp_path / "state"),
        python_path=[str(TRANSFERS.parent)], schema_snapshot=None,
    )  # fmt: skip
    metadata["services"]["transfer"]["snapshot_every"] = 300
    return settings_from_metadata(metadata, env={})


def states(system: System, service: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for shard in system.shards[service]:
        found.update(ray.get(shard.dump.remote(), timeout=120))
    return found


def test_transfers_survive_random_kills(kafka_bootstrap: str, tmp_path: Path, start_system) -> None:
    settings = transfer_settings(kafka_bootstrap, tmp_path)
    system = start_system(settings)
    run = f"r{uuid.uuid4().hex[:6]}"
    assert settings.workload is not None
    mix = load_workload(settings.workload, "metadata.workload", run, seed=11, mix={"overdrafts": "0.1",
                        "unknown_targets": "0.08", "accounts": "40"})  # fmt: skip
    assert all(o.ok for o in system.submit_many(mix.setup()))
    sagas = [mix.next_saga() for _ in range(COUNT)]
    rng = random.Random(20261127)
    errors: list[BaseException] = []
    answered = [0]

    def drive() -> None:
        try:
            for start in range(0, COUNT, BATCH):
                batch: list[Command] = [c for s in sagas[start : start + BATCH] for c in s.commands]
                outcomes = system.submit_many(batch, timeout=300)
                assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
                answered[0] += len(batch)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    victims = [*system.shards["transfer"], *system.shards["account"],
               *[r for rs in system.policy_runners.values() for r in rs]]  # fmt: skip
    driver = threading.Thread(target=drive)
    driver.start()
    kills = 0
    while driver.is_alive() or kills < 4:
        time.sleep(1.0)
        if kills < 4 + answered[0] // KILL_EVERY:  # never faster than the progress allows
            ray.kill(rng.choice(victims), no_restart=False)
            kills += 1
    driver.join()
    assert not errors, errors

    ids = [s.saga_id for s in sagas]
    deadline = time.monotonic() + 240
    last = -1
    transfer = settings.aggregate("transfer")
    while time.monotonic() < deadline:
        held = states(system, "transfer")
        open_ = [i for i in ids if i not in held or not transfer.is_terminal(held[i][0])]
        size = len(read_log(settings, "account-events"))
        if not open_ and size == last:
            break
        last = size
        time.sleep(2)
    log = [*read_log(settings, "transfer-events"), *read_log(settings, "account-events")]
    result = mix.audit(log, ids)
    print(f"\ntransfers e2e: {COUNT} transfers, {kills} kills, outcomes {result.figures['outcomes']}")
    assert result.ok, result.violations
    outcomes = result.figures["outcomes"]
    assert sum(outcomes.values()) == COUNT
    assert {"TransferCompleted", "TransferRejected", "TransferFailed"} <= set(outcomes)
    assert kills >= 4
    assert system.dead_letters() == []

    # The read side agrees with the log.
    want = {k.removeprefix("Transfer").lower(): v for k, v in outcomes.items()}
    got: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and got != want:
        rows = system.query(
            "SELECT status, count() FROM transfers FINAL WHERE startsWith(transfer_id, %(run)s) GROUP BY status",
            {"run": f"{run}-"},
        ).rows
        got = {status: count for status, count in rows}
        time.sleep(1)
    assert got == want

"""The layers lint-imports checks statically, seen at run time: domain code loads no runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("ray", "confluent_kafka", "clickhouse_connect")


@pytest.mark.parametrize(
    "module",
    ["choreography.policies", "choreography.testing", "actors", "events", "projections", "actors.shard_core", "shop"],
)
def test_importing_domain_code_loads_no_ray_kafka_or_clickhouse(module: str) -> None:
    probe = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"importing {module} loaded {loaded}"


def test_the_client_api_imports_first_without_a_cycle() -> None:
    probe = "import choreography.system, choreography; assert choreography.connect is choreography.system.connect"
    subprocess.run([sys.executable, "-c", probe], check=True)

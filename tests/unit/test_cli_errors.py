"""The `choreo` CLI as a new user meets it: a mistyped command, no broker at the configured
address or a bad query prints one line naming the problem and what to do, never a traceback.
Usage errors exit 2, other user and environment errors exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = str(Path(__file__).resolve().parents[2] / "cluster.yaml")


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _choreo(*args: str, bootstrap: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "CHOREO_CONFIG": CONFIG}
    if bootstrap:
        env["CHOREO_KAFKA_BOOTSTRAP"] = bootstrap
    proc = subprocess.run(
        [sys.executable, "-m", "choreography.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stderr + proc.stdout


def _one_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "--nosuch"], "No such option"),
        (["nosuch"], "No such command 'nosuch'"),
        (["kafka", "nosuch"], "See 'choreo kafka --help'"),
        (["submit"], "Missing argument"),
        (["loadtest", "--rate", "fast"], "Invalid value for '--rate'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], expected: str) -> None:
    code, output = _choreo(*args)
    assert code == 2
    assert expected in _one_line(output)


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "AddStock", '{"sku": "A", "quantity": 1}'],
        ["state", "order", "o-1"],
        ["history", "order", "o-1"],
        ["lag"],
        ["saga", "o-1"],
        ["dlq", "list"],
        ["snapshots", "status", "order"],
        ["kafka", "topics"],
        ["deploy"],
    ],
)
def test_no_broker_is_one_line_naming_the_address_and_the_fix(args: list[str]) -> None:
    bootstrap = f"127.0.0.1:{_unused_port()}"
    code, output = _choreo(*args, bootstrap=bootstrap)
    assert code == 1
    line = _one_line(output)
    assert f"no Kafka broker at {bootstrap}" in line
    assert "choreo kafka start" in line and "CHOREO_KAFKA_BOOTSTRAP" in line


def test_a_query_that_is_not_sql_is_refused_in_one_line() -> None:
    code, output = _choreo("query", "SELEC 1")
    assert code == 1
    assert "only SELECT" in _one_line(output) and "'SELEC'" in output


def test_a_command_that_exits_with_a_code_returns_it(tmp_path: Path) -> None:
    """`choreo kafka status` exits 1 when no broker answers (so do `schemas check` on an
    incompatible schema and `loadtest` on a broken invariant): click returns such codes outside
    its standalone mode, and the entry point must pass them on."""
    code, out = _choreo("kafka", "status", "--port", str(_unused_port()), "--data-dir", str(tmp_path / "none"))
    assert code == 1 and "not running" in out

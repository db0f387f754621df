"""CLI surface of `choreo snapshots` and `choreo query`: help texts, and user errors as one line
with exit code 1, decided before any broker or Ray connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from choreography.cli import app, main

CONFIG = str(Path(__file__).resolve().parents[2] / "cluster.yaml")


@pytest.mark.parametrize("command", ["status", "drop", "rebuild"])
def test_snapshot_commands_have_help(command: str) -> None:
    result = CliRunner().invoke(app, ["snapshots", command, "--help"])
    assert result.exit_code == 0
    assert "--partition" in result.output
    if command != "status":
        assert "--yes" in result.output


def test_rebuild_help_says_what_it_does() -> None:
    result = CliRunner().invoke(app, ["snapshots", "rebuild", "--help"])
    assert "drop" in result.output and "rehydrate" in result.output and "checkpoint" in result.output


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    code = exit_info.value.code
    return int(code) if isinstance(code, int) else 1, capsys.readouterr().err


@pytest.mark.parametrize("command", ["status", "drop", "rebuild"])
def test_unknown_service_is_one_line_and_exit_1(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["snapshots", command, "nope", "--yes", "-c", CONFIG] if command != "status"
                     else ["snapshots", command, "nope", "-c", CONFIG], capsys)  # fmt: skip
    assert code == 1
    assert err.strip().count("\n") == 0 and "unknown service 'nope'" in err
    assert "Traceback" not in err


def test_unknown_partition_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["snapshots", "status", "order", "--partition", "999", "-c", CONFIG], capsys)
    assert code == 1 and "no partition 999" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize(
    "sql",
    ["DROP TABLE orders", "SELECT 1 INTO OUTFILE 'x.csv'", "SELECT * FROM file('/etc/passwd', 'LineAsString')"],
)
def test_query_refusal_is_one_line_and_exit_1(sql: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["query", sql, "-c", CONFIG], capsys)
    assert code == 1
    assert err.strip().count("\n") == 0 and "query rejected" in err
    assert "Traceback" not in err

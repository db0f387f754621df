"""An `http://user:password@host` ClickHouse DSN never shows its password: not in the sink's
errors (a refused connection: no server needed), not in the logs written meanwhile, not in the
repr or str of the settings or the sink."""

from __future__ import annotations

import logging
import pickle
import socket
import traceback
from pathlib import Path

import pytest

from choreography.config import load_settings
from events.log.secrets import SecretError
from projections.dsn import redacted, resolved, scrubbed
from projections.errors import SinkUnavailable
from projections.sink import ClickHouseSink

CANARY = "s3cr3t-canary!"
ENCODED = "s3cr3t-canary%21"  # as a URL carries it


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connections are refused


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (f"http://alice:{ENCODED}@ch.example:8123/shop", "http://alice:***@ch.example:8123/shop"),
        (f"https://alice:{CANARY}@ch.example/shop?secure=1", "https://alice:***@ch.example/shop?secure=1"),
        ("http://alice@ch.example:8123", "http://alice@ch.example:8123"),
        ("chdb:///var/lib/choreo/clickhouse", "chdb:///var/lib/choreo/clickhouse"),
    ],
)
def test_a_dsn_is_shown_with_its_password_masked(dsn: str, shown: str) -> None:
    assert redacted(dsn) == shown
    assert scrubbed(f"failed: {dsn}", dsn).count("canary") == 0


def test_an_error_message_loses_the_password_in_either_spelling() -> None:
    dsn = f"http://alice:{ENCODED}@ch.example:8123"
    assert scrubbed(f"auth {CANARY} / {ENCODED} at {dsn}", dsn) == "auth *** / *** at http://alice:***@ch.example:8123"


def test_a_refused_connection_names_the_server_but_never_the_password(caplog: pytest.LogCaptureFixture) -> None:
    port = refused_port()
    dsn = f"http://alice:{ENCODED}@127.0.0.1:{port}/shop"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SinkUnavailable) as failed:
        ClickHouseSink(dsn)
    shown = "".join(traceback.format_exception(failed.value)) + repr(failed.value) + caplog.text
    assert f"127.0.0.1:{port}" in str(failed.value) and "alice:***@" in str(failed.value)
    assert "canary" not in shown


def test_settings_keep_the_password_for_use_but_never_show_it() -> None:
    dsn = f"http://alice:{ENCODED}@ch.example:8123/shop"
    settings = load_settings("cluster.yaml", env={"CHOREO_CLICKHOUSE_DSN": dsn})
    assert settings.clickhouse.dsn == dsn, "the client still gets the real DSN"
    for shown in (repr(settings), str(settings), repr(settings.clickhouse), f"{settings.clickhouse}"):
        assert "canary" not in shown and "alice:***@ch.example:8123" in shown


def test_a_password_by_reference_travels_as_the_reference_and_is_read_where_it_connects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = refused_port()
    env = {"CHOREO_CLICKHOUSE_DSN": f"http://alice@127.0.0.1:{port}/shop", "CHOREO_CLICKHOUSE_PASSWORD": CANARY}
    settings = load_settings("cluster.yaml", env=env)
    assert CANARY.encode() not in pickle.dumps(settings), "what travels to the projection host names the variable"
    assert redacted(settings.clickhouse.dsn) == f"http://alice:***@127.0.0.1:{port}/shop"
    monkeypatch.setenv("CHOREO_CLICKHOUSE_PASSWORD", CANARY)
    assert f"alice:{ENCODED}@127.0.0.1:{port}" in resolved(settings.clickhouse.dsn)
    with pytest.raises(SinkUnavailable) as failed:
        ClickHouseSink(settings.clickhouse.dsn)
    assert f"127.0.0.1:{port}" in str(failed.value) and "canary" not in "".join(
        traceback.format_exception(failed.value)
    )
    secret = tmp_path / "ch-password"
    secret.write_text(CANARY + "\n")
    by_file = {**env, "CHOREO_CLICKHOUSE_PASSWORD": "", "CHOREO_CLICKHOUSE_PASSWORD_FILE": str(secret)}
    from_file = load_settings("cluster.yaml", env=by_file)
    monkeypatch.delenv("CHOREO_CLICKHOUSE_PASSWORD")
    assert f"alice:{ENCODED}@" in resolved(from_file.clickhouse.dsn)


def test_a_reference_that_does_not_resolve_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHOREO_CLICKHOUSE_PASSWORD", raising=False)
    dsn = "http://alice:${env:CHOREO_CLICKHOUSE_PASSWORD}@ch.example:8123/shop"  # written so in cluster.yaml
    with pytest.raises(SecretError, match="CHOREO_CLICKHOUSE_PASSWORD is not set"):
        resolved(dsn)

"""An `http://user:password@host` ClickHouse DSN never shows its password: not in the sink's
errors (a refused connection: no server needed), not in the logs written meanwhile, not in the
repr or str of the settings or the sink."""

from __future__ import annotations

import logging
import socket
import traceback

import pytest

from choreography.config import load_settings
from projections.dsn import redacted, scrubbed
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

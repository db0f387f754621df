"""The `choreo` command line, one module per group of verbs: `kafka` (local broker), `reads`
(submit, state, history, saga, query, lag, validate), `run` (demo, loadtest), `cluster`
(deploy, status, down), `ops` (projections, schemas, snapshots, dead letters) and `visibility`
(graph). `main` turns user and environment errors into one line and an exit code."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from choreography.broker import BrokerError
from choreography.cli import cluster, kafka, ops, reads, run, visibility
from choreography.cli.common import app, err_console, loaded, no_broker_error
from choreography.config import ConfigError
from choreography.errors import (
    CommandRejected,
    InvalidCommand,
    NotDeployed,
    ProjectionTimeout,
    QueryError,
    QueryRejected,
    ShardUnavailable,
)
from choreography.graph import RendererMissing

__all__ = ["app", "cluster", "kafka", "main", "ops", "reads", "run", "visibility"]

USER_ERRORS = (
    ConfigError,
    BrokerError,
    InvalidCommand,
    CommandRejected,
    ShardUnavailable,
    ProjectionTimeout,
    QueryRejected,
    QueryError,
    NotDeployed,
    TimeoutError,
    ValueError,
    RendererMissing,
)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user and environment errors print one red line and exit 1 (usage errors 2),
    never a stack trace."""
    from confluent_kafka import KafkaException

    use_ray_token()
    try:
        # Outside standalone mode click returns the code of a `typer.Exit` instead of exiting.
        code = app(args=argv, prog_name="choreo", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except USER_ERRORS as exc:
        _fail(str(exc), 1)
    except KafkaException as exc:
        _fail(_kafka_message(exc), 1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        _fail(_usage_message(exc), getattr(exc, "exit_code", 2))


def use_ray_token() -> None:
    """`ray start --head` turns on token authentication and writes the token to
    ~/.ray/auth_token, but a driver only sends it with RAY_AUTH_MODE=token, read when Ray is
    imported: with that file present and RAY_AUTH_MODE unset, set it before Ray loads. Once Ray
    is loaded (the CLI called in-process) it is too late, and the variable would only reach the
    processes Ray starts, which would then refuse this driver."""
    import os
    from pathlib import Path

    if "ray" in sys.modules:
        return
    if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def _fail(message: str, code: int) -> None:
    err_console.print(Text.assemble(("error: ", "red"), message), soft_wrap=True, highlight=False)
    sys.exit(code)


def _usage_message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    message = format_message() if format_message else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "choreo"
    message = message.strip()
    return f"{message}{'' if message.endswith(('.', '?', '!')) else '.'} See '{where} --help'."


def _kafka_message(exc: Exception) -> str:
    error = exc.args[0] if exc.args else exc
    text = str(error.str()) if hasattr(error, "str") else str(exc)
    bootstrap = loaded[-1].kafka.bootstrap_servers if loaded else "the configured address"
    if "transport" in text.lower() or "brokers are down" in text.lower() or "timed out" in text.lower():
        return str(no_broker_error(bootstrap))
    return f"Kafka at {bootstrap}: {text}"

"""`choreo kafka`: a local Apache Kafka broker (KRaft) for laptops and tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from choreography.broker import LocalBroker
from choreography.cli.common import ConfigOpt, DataDirOpt, PortOpt, app, console, require_broker, settings_for

kafka_app = typer.Typer(help="Run a local single-node Apache Kafka broker (KRaft).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")

# ---- kafka ------------------------------------------------------------------------


@kafka_app.command("start")
def kafka_start(
    port: PortOpt = 9092,
    data_dir: DataDirOpt = None,
    heap: Annotated[str, typer.Option(help="JVM heap size.")] = "1g",
    config: ConfigOpt = None,
    topics: Annotated[bool, typer.Option(help="Create the topics declared in the config.")] = True,
) -> None:
    """Fetch the broker jars with Maven (once), format storage, start the broker and create topics."""
    broker = LocalBroker(port=port, data_dir=data_dir, heap=heap)
    with console.status(f"Starting Kafka on 127.0.0.1:{port}..."):
        status, started = broker.start()
    if started:
        console.print(f"[green]Kafka started[/] on {status.bootstrap} (pid {status.pid}, data {status.data_dir})")
    else:
        who = f"pid {status.pid}" if status.pid else "not started by choreo"
        console.print(f"[yellow]Kafka is already running[/] on {status.bootstrap} ({who})")
    if topics:
        _create_topics(config, f"127.0.0.1:{port}")


def _create_topics(config: Path | None, bootstrap: str) -> None:
    from choreography.topology import ensure_topics

    settings = settings_for(config)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
    require_broker(settings)
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    created = ensure_topics(settings)
    console.print(f"Topics: {len(created)} created, {len(settings.topics) - len(created)} already present")


@kafka_app.command("stop")
def kafka_stop(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Stop the broker started by `choreo kafka start` (SIGTERM, then a clean shutdown)."""
    broker = LocalBroker(port=port, data_dir=data_dir)
    with console.status("Stopping Kafka..."):
        stopped = broker.stop()
    console.print("[green]Kafka stopped[/]" if stopped else "No choreo-managed broker is running.")


@kafka_app.command("status")
def kafka_status(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Tell whether a broker answers on the port. Exit code 1 when none does."""
    s = LocalBroker(port=port, data_dir=data_dir).status()
    if s.running:
        who = f"pid {s.pid}" if s.pid else "not started by choreo"
        console.print(f"[green]running[/] on {s.bootstrap} ({who}), data {s.data_dir}")
    else:
        console.print(f"[red]not running[/] on {s.bootstrap}")
        raise typer.Exit(1)


@kafka_app.command("topics")
def kafka_topics(config: ConfigOpt = None) -> None:
    """Create the topics declared in the config (idempotent)."""
    settings = settings_for(config)
    _create_topics(config, settings.kafka.bootstrap_servers)


@kafka_app.command("wipe")
def kafka_wipe(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Delete the local broker's data directory (the broker must be stopped)."""
    broker = LocalBroker(port=port, data_dir=data_dir)
    broker.wipe()
    console.print(f"Deleted {broker.data_dir}")

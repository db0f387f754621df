"""What every `choreo` verb shares: the app, consoles, options, loading the config, checking
the broker, starting a system, tables and progress bars."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from choreography.broker import BrokerError
from choreography.config import Settings, load_settings

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Choreo: event-sourced, choreography-based microservices on Ray, Kafka and ClickHouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Cluster file with the topology under `metadata:`.", envvar="CHOREO_CONFIG"),
]
PortOpt = Annotated[int, typer.Option(help="Broker port on 127.0.0.1 (the controller uses port+1).")]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="Broker data directory [default: ~/.cache/choreo/kafka-data-PORT].")
]


loaded: list[Settings] = []
"""The settings this invocation loaded, so that an error can name the broker it tried."""


def settings_for(config: Path | None) -> Settings:
    settings = load_settings(config)
    loaded.append(settings)
    return settings


def no_broker_error(bootstrap: str) -> BrokerError:
    return BrokerError(
        f"no Kafka broker at {bootstrap}: start one with `choreo kafka start` or set CHOREO_KAFKA_BOOTSTRAP"
    )


def require_broker(settings: Settings) -> None:
    """Fail within seconds, in one line, when no broker answers: before starting Ray or waiting on
    clients that would retry for a minute."""
    from confluent_kafka import KafkaException

    from actors.runtime import probe_broker

    try:
        probe_broker(settings.kafka.client_config())
    except KafkaException:
        raise no_broker_error(settings.kafka.bootstrap_servers) from None


@contextmanager
def running_system(config: Path | None, **options: Any) -> Iterator[Any]:
    from choreography.system import connect

    require_broker(settings_for(config))
    with console.status("Starting Ray actors (shards rehydrate from Kafka)..."):
        system = connect(config, **options)
    try:
        yield system
    finally:
        system.close()


def is_local(bootstrap: str) -> bool:
    host = bootstrap.split(",")[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def print_table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(v) for v in r))
    console.print(table)


ServiceArg = Annotated[str, typer.Argument(help="Service, e.g. order.")]
PartitionOpt = Annotated[
    list[int] | None, typer.Option("--partition", "-p", help="Only this partition (repeatable) [default: all].")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def wait_projection_caught_up(system: Any, settings: Settings, name: str, timeout: float = 30) -> None:
    """Wait until a projection has stored everything its topics hold right now."""
    if name not in settings.projections:
        return
    ends = end_offsets_of(settings, settings.projections[name].topics)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        positions = system.projection_status()[name]["positions"]
        # A transactional partition ends with a commit marker the projection never "reads".
        if all(positions.get(k, 0) >= end - 1 for k, end in ends.items()):
            return
        time.sleep(0.1)


def end_offsets_of(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer

    from events.log.kafka_io import consumer_config, end_offsets

    consumer = Consumer(consumer_config(settings.kafka.client_config(), "choreo-cli"))
    try:
        return end_offsets(consumer, [settings.topic_name(t) for t in topics], timeout=10)
    finally:
        consumer.close()


def confirm(yes: bool, question: str) -> None:
    if not yes and not typer.confirm(question, default=False):
        raise typer.Abort()


def connect_ray(settings: Settings) -> bool:
    """Join the running Ray cluster ($RAY_ADDRESS or the local one). False when none runs."""
    from choreography.deployment import init_ray

    try:
        init_ray(settings.namespace)
    except ConnectionError:
        return False
    return True


def start_ray(settings: Settings) -> None:
    import ray

    ray.init(namespace=settings.namespace, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)

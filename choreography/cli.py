"""The `choreo` command line: local Kafka broker, demo, commands, state and analytics queries."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from choreography.broker import BrokerError, LocalBroker
from choreography.config import ConfigError, Settings, load_settings, validate_cluster_file
from choreography.errors import CommandRejected, InvalidCommand, ProjectionTimeout, ShardUnavailable

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Choreo: event-sourced, choreography-based microservices on Ray, Kafka and ClickHouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="Run a local single-node Apache Kafka broker (KRaft).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")

USER_ERRORS = (
    ConfigError,
    BrokerError,
    InvalidCommand,
    CommandRejected,
    ShardUnavailable,
    ProjectionTimeout,
    ValueError,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Cluster file with the topology under `metadata:`.", envvar="CHOREO_CONFIG"
    ),
]
PortOpt = Annotated[int, typer.Option(help="Broker port on 127.0.0.1 (the controller uses port+1).")]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="Broker data directory [default: ~/.cache/choreo/kafka-data-PORT].")
]


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


@contextmanager
def _system(config: Path | None, **options: Any) -> Iterator[Any]:
    from choreography.system import connect

    with console.status("Starting Ray actors (shards rehydrate from Kafka)..."):
        system = connect(config, **options)
    try:
        yield system
    finally:
        system.close()


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
        console.print(
            f"[green]Kafka started[/] on {status.bootstrap} (pid {status.pid}, data {status.data_dir})"
        )
    else:
        who = f"pid {status.pid}" if status.pid else "not started by choreo"
        console.print(f"[yellow]Kafka is already running[/] on {status.bootstrap} ({who})")
    if topics:
        _create_topics(config, f"127.0.0.1:{port}")


def _create_topics(config: Path | None, bootstrap: str) -> None:
    from choreography.topics import ensure_topics

    settings = _settings(config)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})}
    )
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
    settings = _settings(config)
    _create_topics(config, settings.kafka.bootstrap_servers)


@kafka_app.command("wipe")
def kafka_wipe(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Delete the local broker's data directory (the broker must be stopped)."""
    broker = LocalBroker(port=port, data_dir=data_dir)
    broker.wipe()
    console.print(f"Deleted {broker.data_dir}")


# ---- config -----------------------------------------------------------------------


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="Cluster file.")] = Path("cluster.yaml")) -> None:
    """Validate a cluster file with Ray's cluster-launcher schema and Choreo's topology model."""
    settings = validate_cluster_file(config)
    console.print(
        f"[green]{config} is valid[/]: {len(settings.topics)} topics, services "
        + ", ".join(f"{n}={s.shards} shards" for n, s in settings.services.items())
    )


# ---- demo -------------------------------------------------------------------------


@app.command()
def demo(
    orders: Annotated[int, typer.Option(help="How many orders to place.")] = 3000,
    cancel_ratio: Annotated[float, typer.Option(help="Share of orders the customer cancels.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    config: ConfigOpt = None,
    start_kafka: Annotated[bool, typer.Option(help="Start the local broker if none runs.")] = True,
) -> None:
    """Start Kafka if needed, place orders through the shard actors, and summarise from ClickHouse."""
    from events import CancelOrder, OrderLine, PlaceOrder

    settings = _settings(config)
    if start_kafka and _is_local(settings.kafka.bootstrap_servers):
        port = int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])
        with console.status("Starting Kafka..."):
            status, started = LocalBroker(port=port).start()
        console.print(f"Kafka {'started' if started else 'already running'} on {status.bootstrap}")
    rng = random.Random(seed)
    run = f"{int(time.time())}"
    skus = [f"SKU-{i:03d}" for i in range(50)]
    places = [
        PlaceOrder(
            order_id=f"demo-{run}-{i}",
            customer_id=f"customer-{rng.randrange(200)}",
            lines=tuple(
                OrderLine(sku=sku, quantity=rng.randint(1, 3), unit_price_cents=rng.randint(100, 5000))
                for sku in rng.sample(skus, rng.randint(1, 3))
            ),
        )
        for i in range(orders)
    ]
    cancels = [CancelOrder(order_id=p.order_id) for p in places if rng.random() < cancel_ratio]
    with _system(config) as system:
        started_at = time.perf_counter()
        last: list[Any] = []
        with _progress() as progress:
            task = progress.add_task("Placing orders", total=len(places) + len(cancels))
            for batch in _chunks([*places, *cancels], 500):
                for outcome in system.submit_many(batch):
                    if outcome.ok:
                        last = outcome.events or last
                progress.advance(task, len(batch))
        elapsed = time.perf_counter() - started_at
        with console.status("Waiting for the orders projection to catch up..."):
            system.wait_for(last, projection="orders", timeout=60)
            _wait_projection_count(system, len(places))
        result = system.query(
            "SELECT status, count() AS orders, sum(total_cents) / 100 AS revenue, "
            "round(avg(line_count), 2) AS avg_lines FROM orders FINAL "
            "WHERE order_id LIKE %(prefix)s GROUP BY status ORDER BY status",
            {"prefix": f"demo-{run}-%"},
        )
    console.print(
        f"Submitted {len(places)} orders and {len(cancels)} cancellations in {elapsed:.2f}s "
        f"({(len(places) + len(cancels)) / elapsed:,.0f} commands/s)"
    )
    _print_table("Orders by status (read back from ClickHouse)", result.columns, result.rows)


def _wait_projection_count(system: Any, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Positions cover every event, so this only guards against a projection restart.
        if system.query("SELECT count() FROM orders FINAL").scalar() >= expected:
            return
        time.sleep(0.1)


def _is_local(bootstrap: str) -> bool:
    host = bootstrap.split(",")[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _print_table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(v) for v in r))
    console.print(table)


# ---- commands and reads --------------------------------------------------------------


@app.command()
def submit(
    command_type: Annotated[str, typer.Argument(help="Command type, e.g. PlaceOrder.")],
    payload: Annotated[str, typer.Argument(help="The command as JSON.")],
    config: ConfigOpt = None,
) -> None:
    """Submit one command and print the events it produced (or why it was rejected)."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidCommand(f"payload is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidCommand("payload must be a JSON object")
    from events import default_registry

    command = default_registry().parse_command(command_type, data)  # validate before starting Ray
    with _system(config) as system:
        events = system.submit(command)
    _print_table(
        "Appended events",
        ["type", "aggregate_id", "version", "partition", "offset"],
        [tuple(e.summary().values()) for e in events],
    )


@app.command()
def state(
    service: Annotated[str, typer.Argument(help="Service, e.g. order.")],
    aggregate_id: Annotated[str, typer.Argument(help="Aggregate id.")],
    config: ConfigOpt = None,
) -> None:
    """Print an aggregate's current state, rebuilt by its shard from Kafka."""
    settings = _settings(config)
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")
    with _system(config, projections=False) as system:
        current, version = system.state(service, aggregate_id)
    console.print_json(json.dumps({"version": version, "state": current.model_dump(mode="json")}))


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="ClickHouse SQL, e.g. 'SELECT count() FROM orders FINAL'.")],
    config: ConfigOpt = None,
) -> None:
    """Run analytics SQL on the ClickHouse read side."""
    with _system(config) as system:
        result = system.query(sql)
    _print_table(sql, result.columns, result.rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one red line and exit 1, never a stack trace."""
    try:
        app(args=argv, standalone_mode=False)
    except USER_ERRORS as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise

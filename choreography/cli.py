"""The `choreo` command line: local Kafka broker, demo, commands, state and analytics queries."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from choreography.broker import BrokerError, LocalBroker
from choreography.config import ConfigError, Settings, load_settings, validate_cluster_file
from choreography.errors import (
    CommandRejected,
    InvalidCommand,
    ProjectionTimeout,
    QueryError,
    QueryRejected,
    ShardUnavailable,
)
from choreography.topics import DLQ_TOPIC

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
    QueryRejected,
    QueryError,
    ValueError,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Cluster file with the topology under `metadata:`.", envvar="CHOREO_CONFIG"),
]
PortOpt = Annotated[int, typer.Option(help="Broker port on 127.0.0.1 (the controller uses port+1).")]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="Broker data directory [default: ~/.cache/choreo/kafka-data-PORT].")
]


_loaded: list[Settings] = []
"""The settings this invocation loaded, so that an error can name the broker it tried."""


def _settings(config: Path | None) -> Settings:
    settings = load_settings(config)
    _loaded.append(settings)
    return settings


def _no_broker(bootstrap: str) -> BrokerError:
    return BrokerError(
        f"no Kafka broker at {bootstrap}: start one with `choreo kafka start` or set CHOREO_KAFKA_BOOTSTRAP"
    )


def _require_broker(settings: Settings) -> None:
    """Fail within seconds, in one line, when no broker answers: before starting Ray or waiting on
    clients that would retry for a minute."""
    from confluent_kafka import KafkaException

    from choreography.runtime import probe_broker

    try:
        probe_broker(settings.kafka.client_config())
    except KafkaException:
        raise _no_broker(settings.kafka.bootstrap_servers) from None


@contextmanager
def _system(config: Path | None, **options: Any) -> Iterator[Any]:
    from choreography.system import connect

    _require_broker(_settings(config))
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
        console.print(f"[green]Kafka started[/] on {status.bootstrap} (pid {status.pid}, data {status.data_dir})")
    else:
        who = f"pid {status.pid}" if status.pid else "not started by choreo"
        console.print(f"[yellow]Kafka is already running[/] on {status.bootstrap} ({who})")
    if topics:
        _create_topics(config, f"127.0.0.1:{port}")


def _create_topics(config: Path | None, bootstrap: str) -> None:
    from choreography.topics import ensure_topics

    settings = _settings(config)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
    _require_broker(settings)
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


WorkloadOpt = Annotated[
    str | None,
    typer.Option(help="Workload by import path, module:attribute [default: metadata.workload of the config]."),
]
MixOpt = Annotated[
    list[str] | None,
    typer.Option("--mix", help="A workload option, KEY=VALUE (repeatable), e.g. --mix declines=0.2."),
]


def _workload(settings: Settings, path: str | None, run: str, seed: int, mix: list[str] | None) -> Any:
    from choreography.workload import load_workload

    path = path or settings.workload
    if path is None:
        raise ConfigError("no workload: set metadata.workload in the config or pass --workload module:attribute")
    options: dict[str, str] = {}
    for item in mix or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--mix expects KEY=VALUE, got {item!r}")
        options[key] = value
    try:
        return load_workload(
            path, "--workload" if path != settings.workload else "metadata.workload", run, seed, options
        )
    except ValueError as exc:  # the workload refused its options
        raise ConfigError(str(exc)) from None


@app.command()
def demo(
    sagas: Annotated[int, typer.Option(help="How many sagas to run (with the reference app: orders).")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed of the workload.")] = 7,
    workload: WorkloadOpt = None,
    mix: MixOpt = None,
    config: ConfigOpt = None,
    start_kafka: Annotated[bool, typer.Option(help="Start the local broker if none runs.")] = True,
) -> None:
    """Start Kafka if needed, run sagas of the declared workload through the whole choreography,
    and summarise them from ClickHouse.

    With the reference app's workload every compensation path shows up: declined cards,
    undeliverable addresses, customer cancels and orders for a scarce SKU that runs out."""
    from choreography.loadtest import LoadSpec, LoadTest, SagaObserver

    settings = _settings(config)
    if start_kafka and _is_local(settings.kafka.bootstrap_servers):
        port = int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])
        with console.status("Starting Kafka..."):
            status, started = LocalBroker(port=port).start()
        console.print(f"Kafka {'started' if started else 'already running'} on {status.bootstrap}")
    run = f"demo{int(time.time())}"
    load = _workload(settings, workload, run, seed, mix)
    with _system(config) as system:
        system.submit_many(load.setup())
        test = LoadTest(system, LoadSpec(mode="closed", sagas=sagas, concurrency=min(sagas, 1000)), load, run)
        observer = SagaObserver(system, run, load)
        observer.start()
        with _progress() as progress:
            task = progress.add_task("Sagas finished", total=sagas)
            tick = lambda t, o, started: progress.update(task, completed=len(o.ended))  # noqa: E731
            seconds = test.run_load(observer, tick)
            test.drain(observer, time.monotonic() - seconds, tick)
        observer.stop_flag.set()
        elapsed = max(v[1] for v in observer.ended.values()) - min(test.started_at.values()) if observer.ended else 0.0
        summary = system.query(load.summary_sql, {"run": run + "-"}) if hasattr(load, "summary_sql") else None
        first = next(iter(test.started_at))
        trail = None
        if "events_raw" in settings.projections:
            _wait_projection_caught_up(system, settings, "events_raw")
            trail = system.saga(first)
    done = len(observer.ended)
    console.print(
        f"{done}/{sagas} sagas ended in {elapsed:.1f}s ({done / elapsed if elapsed else 0:,.0f} sagas/s through the "
        f"whole choreography): "
        + ", ".join(f"{n} {k}" for k, n in Counter(v[0] for v in observer.ended.values()).items())
    )
    if summary is not None:
        _print_table("Summary (read back from ClickHouse)", summary.columns, summary.rows)
    if trail is not None:
        _print_table(f"Saga {first}", ["service", "event", "version"], [(r[1], r[2], r[4]) for r in trail.rows])
    if done < sagas:
        raise ProjectionTimeout(f"only {done} of {sagas} sagas ended; see `choreo lag` for the consumer that is behind")


def _is_local(bootstrap: str) -> bool:
    host = bootstrap.split(",")[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


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

    command = _settings(config).registry().parse_command(command_type, data)  # validate before starting Ray
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
    as_of: Annotated[
        datetime | None, typer.Option("--as-of", help="Rebuild the state as it was at this time (UTC).")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Rebuild the state as it was at this version.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Print an aggregate's state: current, or as of a time or version (time travel)."""
    settings = _settings(config)
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    with _system(config, projections=False, policies=False) as system:
        current, reached = system.state(service, aggregate_id, as_of=as_of, version=version)
    if reached == 0:
        when = "" if as_of is None and version is None else " at that point"
        raise ValueError(f"no {service} {aggregate_id!r}{when}: the event log holds no events for it")
    console.print_json(json.dumps({"version": reached, "state": current.model_dump(mode="json")}))


@app.command()
def history(
    service: Annotated[str, typer.Argument(help="Service, e.g. order.")],
    aggregate_id: Annotated[str, typer.Argument(help="Aggregate id.")],
    config: ConfigOpt = None,
) -> None:
    """Print every event of one aggregate, oldest first, read from the event log."""
    from choreography.eventlog import read_topic
    from choreography.topics import events_topic, partition_for

    settings = _settings(config)
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")
    _require_broker(settings)
    events = sorted(
        read_topic(
            settings.kafka.client_config(),
            settings.topic_name(events_topic(service)),
            settings.registry(),
            partitions=[partition_for(aggregate_id, settings.partitions(service))],
            key=aggregate_id.encode(),
        ),
        key=lambda e: e.version,
    )
    if not events:
        raise ValueError(f"no events for {service} {aggregate_id!r}")
    _print_table(
        f"History of {service} {aggregate_id}",
        ["version", "occurred_at", "event", "payload"],
        [(e.version, str(e.envelope.occurred_at), e.envelope.event_type, e.payload.model_dump_json())
         for e in events],
    )  # fmt: skip


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="ClickHouse SQL, e.g. 'SELECT count() FROM orders FINAL'.")],
    config: ConfigOpt = None,
) -> None:
    """Run read-only analytics SQL on the ClickHouse read side: one SELECT, WITH, SHOW, DESCRIBE,
    EXPLAIN or EXISTS statement. Writes, DDL, SET/SETTINGS, INTO OUTFILE and functions that reach
    outside the database (file, url, s3, remote, executable, dictGet...) are refused."""
    from projections.readonly import check_read_only

    check_read_only(sql)  # refuse before starting anything
    with _system(config) as system:
        result = system.query(sql)
    _print_table(sql, result.columns, result.rows)


@app.command()
def lag(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 2.0,
    config: ConfigOpt = None,
) -> None:
    """Per consumer group (shards, policies, projections): committed offset, end offset, lag, events/s."""
    from rich.live import Live

    from choreography.lag import consumer_lag, with_rates

    settings = _settings(config)
    _require_broker(settings)
    before = consumer_lag(settings)
    time.sleep(min(interval, 1.0))
    rows = with_rates(consumer_lag(settings), before, min(interval, 1.0))
    if not watch:
        console.print(_lag_table(rows))
        return
    with Live(_lag_table(rows), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(interval)
            now = consumer_lag(settings)
            live.update(_lag_table(with_rates(now, rows, interval)))
            rows = now


def _lag_table(rows: list[Any]) -> Table:
    table = Table(title=f"Consumer lag at {time.strftime('%H:%M:%S')}")
    for col in ("group", "topic", "partition", "committed", "end", "lag", "events/s"):
        table.add_column(col, justify="right" if col not in ("group", "topic") else "left")
    for r in sorted(rows, key=lambda r: (r.kind, r.group, r.topic, r.partition)):
        committed = "-" if r.committed < 0 else str(r.committed)
        style = "red" if r.lag > 10_000 else None
        table.add_row(r.group, r.topic, str(r.partition), committed, str(r.end), str(r.lag),
                      f"{r.events_per_s:,.0f}", style=style)  # fmt: skip
    return table


projections_app = typer.Typer(help="Inspect and rebuild ClickHouse projections.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


@projections_app.command("list")
def projections_list(config: ConfigOpt = None) -> None:
    """Show each projection's tables, events and rows stored, poison and parked events."""
    settings = _settings(config)
    with _system(config, policies=False) as system:
        status = system.projection_status()
    _print_table(
        "Projections",
        ["name", "tables", "topics", "events (this run)", "rows (this run)", "poison", "parked", "rebuilding"],
        [
            (name, ", ".join(t.name for t in settings.projection(name).tables), ", ".join(spec.topics),
             status.get(name, {}).get("events", 0), status.get(name, {}).get("rows", 0),
             status.get(name, {}).get("poison", 0), status.get(name, {}).get("parked", 0),
             "yes" if status.get(name, {}).get("rebuild") is not None else "")
            for name, spec in settings.projections.items()
        ],
    )  # fmt: skip


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="Projection to rebuild, e.g. orders.")],
    config: ConfigOpt = None,
) -> None:
    """Replay the projection from the earliest offset into fresh tables while the live ones keep
    serving, then swap them in (runbook Case 1); a progress bar shows events/s and ETA."""
    settings = _settings(config)
    if name not in settings.projections:
        raise ValueError(f"unknown projection {name!r}; known: {sorted(settings.projections)}")
    with _system(config, policies=False) as system:
        ends = _end_offsets(settings, settings.projections[name].topics)
        total = sum(ends.values())
        system.rebuild_projection(name)
        started = time.perf_counter()
        with Progress(
            TextColumn(f"Rebuilding {name}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} events/s"), TimeRemainingColumn(), console=console,
        ) as progress:  # fmt: skip
            task = progress.add_task("rebuild", total=total, rate="0")
            while True:
                positions = system.projection_status()[name]["rebuild"]
                if positions is None:  # caught up with the live tables and swapped in
                    progress.update(task, completed=total)
                    break
                done = sum(min(positions.get(k, 0), end) for k, end in ends.items())
                rate = done / max(time.perf_counter() - started, 1e-6)
                progress.update(task, completed=done, rate=f"{rate:,.0f}")
                time.sleep(0.2)
    elapsed = time.perf_counter() - started
    console.print(f"[green]Rebuilt {name}[/]: {total:,} events in {elapsed:.1f}s ({total / elapsed:,.0f} events/s)")


def _wait_projection_caught_up(system: Any, settings: Settings, name: str, timeout: float = 30) -> None:
    """Wait until a projection has stored everything its topics hold right now."""
    if name not in settings.projections:
        return
    ends = _end_offsets(settings, settings.projections[name].topics)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        positions = system.projection_status()[name]["positions"]
        # A transactional partition ends with a commit marker the projection never "reads".
        if all(positions.get(k, 0) >= end - 1 for k, end in ends.items()):
            return
        time.sleep(0.1)


def _end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer

    from choreography.kafka_io import consumer_config, end_offsets

    consumer = Consumer(consumer_config(settings.kafka.client_config(), "choreo-cli"))
    try:
        return end_offsets(consumer, [settings.topic_name(t) for t in topics], timeout=10)
    finally:
        consumer.close()


@app.command()
def loadtest(
    duration: Annotated[float, typer.Option(help="Seconds of load (open loop, or closed without --sagas).")] = 30,
    rate: Annotated[float, typer.Option(help="Open loop: sagas started per second.")] = 500,
    closed: Annotated[
        bool,
        typer.Option(
            "--closed", help="Closed loop: keep --concurrency sagas in flight to find the max sustained rate."
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option(help="Closed loop: sagas in flight.")] = 2000,
    sagas: Annotated[int | None, typer.Option(help="Stop after starting this many sagas.")] = None,
    workload: WorkloadOpt = None,
    mix: MixOpt = None,
    shards: Annotated[list[str] | None, typer.Option(help="Override shard counts, e.g. --shards order=4.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the workload.")] = 1,
    output: Annotated[Path, typer.Option(help="Directory for loadtest.json and PNG plots.")] = Path("loadtest-results"),
    config: ConfigOpt = None,
) -> None:
    """Drive the whole choreography with the declared workload and report sagas/s, latencies,
    stages, errors and the workload's invariant audit.

    Runs against a local system by default, or the Ray cluster in RAY_ADDRESS. The reference
    app's workload takes --mix lines=N, stockouts=, declines=, ship_failures=, cancels= (shares
    between 0 and 1). Exits 1 when an invariant breaks."""
    from rich.live import Live

    from choreography.loadtest import LoadSpec, LoadTest, SagaObserver, new_run_id, write_outputs
    from choreography.system import System

    settings = _with_shards(_settings(config), shards or [])
    run = new_run_id()
    load = _workload(settings, workload, run, seed, mix)
    _require_broker(settings)
    spec = LoadSpec(
        mode="closed" if closed else "open", rate=rate, duration=duration, sagas=sagas, concurrency=concurrency,
        seed=seed,
    )  # fmt: skip
    with console.status("Starting Ray actors (shards rehydrate from Kafka)..."):
        system = System(settings)
    try:
        test = LoadTest(system, spec, load, run)
        system.submit_many(load.setup())
        observer = SagaObserver(system, run, load)
        observer.start()
        with Live(_load_table(test, observer, 0.0), console=console, refresh_per_second=2) as live:
            tick = lambda t, o, started: live.update(_load_table(t, o, time.monotonic() - started))  # noqa: E731
            load_seconds = test.run_load(observer, tick)
            started = time.monotonic() - load_seconds
            test.drain(observer, started, tick)
        observer.stop_flag.set()
        with console.status("Auditing invariants from the event log..."):
            report = test.report(observer, load_seconds)
    finally:
        system.close()
    report["workload"] = {"path": workload or settings.workload, "mix": dict(m.split("=", 1) for m in mix or [])}
    paths = write_outputs(report, output)
    _print_load_summary(report)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if not report["invariants"]["ok"]:
        err_console.print(f"[red]invariants broken:[/] {report['invariants']['violations'][:5]}")
        raise typer.Exit(1)


def _with_shards(settings: Settings, overrides: list[str]) -> Settings:
    services = dict(settings.services)
    for item in overrides:
        name, _, count = item.partition("=")
        if name not in services or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--shards expects SERVICE=N with SERVICE in {sorted(services)}, got {item!r}")
        services[name] = services[name].model_copy(update={"shards": int(count)})
    return settings.model_copy(update={"services": services})


def _load_table(test: Any, observer: Any, elapsed: float) -> Table:
    samples = test.samples[-6:]
    offered = completed = 0.0
    if len(samples) >= 2 and samples[-1].t > samples[0].t:
        dt = samples[-1].t - samples[0].t
        offered = (samples[-1].offered - samples[0].offered) / dt
        completed = (samples[-1].completed - samples[0].completed) / dt
    lag = samples[-1].lag if samples else {}
    table = Table(title=f"choreo loadtest {test.run} ({test.spec.mode} loop) - {elapsed:,.0f}s")
    for col in ("offered/s", "completed/s", "started", "completed", "in flight", "lag", "errors"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{offered:,.0f}", f"{completed:,.0f}", f"{len(test.started_at):,}", f"{len(observer.ended):,}",
        f"{len(test.started_at) - len(observer.ended):,}", " ".join(f"{k}={v}" for k, v in sorted(lag.items())) or "-",
        str(sum(test.errors.values())),
    )  # fmt: skip
    return table


def _print_load_summary(report: dict[str, Any]) -> None:
    lat = report["latency_ms"]
    table = Table(title=f"Load test {report['run']}: {report['sagas']:,} sagas")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("sagas/s (completed, sustained)", f"{report['sagas_per_s']:,.0f}")
    table.add_row("sagas/s offered", f"{report['offered_sagas_per_s']:,.0f}")
    for name in ("start_to_terminal", "start_to_visible"):
        p = lat[name]
        table.add_row(
            f"{name} p50/p95/p99/max ms", f"{p['p50']:,.0f} / {p['p95']:,.0f} / {p['p99']:,.0f} / {p['max']:,.0f}"
        )
    table.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(report["outcomes"].items())))
    table.add_row("stuck sagas", str(report["stuck"]))
    for stage, per_s in sorted(report["stages_per_s"].items()):
        table.add_row(f"stage {stage}/s", f"{per_s:,.0f}")
    table.add_row("errors", ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none")
    inv = report["invariants"]
    table.add_row("invariants", "[green]ok[/]" if inv["ok"] else f"[red]BROKEN[/] {inv['violations'][:3]}")
    console.print(table)


@app.command()
def saga(
    saga_id: Annotated[str, typer.Argument(help="The saga's correlation id (with the reference app: an order id).")],
    config: ConfigOpt = None,
) -> None:
    """Print one saga's cross-service event trail, in order: its audit log (needs the events_raw projection)."""
    with _system(config) as system:
        trail = system.saga(saga_id)
    if not trail.rows:
        raise ValueError(f"no events correlated with {saga_id!r}")
    _print_table(
        f"Saga {saga_id}",
        ["time", "service", "event", "aggregate", "version", "payload"],
        [(str(r[0]), r[1], r[2], r[3], r[4], r[7]) for r in trail.rows],
    )


schemas_app = typer.Typer(
    help="Check that every declared event stays readable: compare its JSON schema with the committed snapshot.",
    no_args_is_help=True,
)
app.add_typer(schemas_app, name="schemas")


def _schemas(config: Path | None, write: bool) -> None:
    from events.schemas import run

    settings = _settings(config)
    if settings.schema_snapshot is None:
        raise ConfigError("no schema snapshot: set metadata.schema_snapshot in the config (a path)")
    code = run(write, Path(settings.schema_snapshot), settings.registry(), "choreo schemas write")
    if code:
        raise typer.Exit(code)


@schemas_app.command("check")
def schemas_check(config: ConfigOpt = None) -> None:
    """Exit 1, one line per problem, when an event changed incompatibly: a type or property
    removed, a property's type changed, a property made required, or a raised schema_version
    without an upcaster for every step."""
    _schemas(config, write=False)


@schemas_app.command("write")
def schemas_write(config: ConfigOpt = None) -> None:
    """Rewrite the snapshot from the current event models (after a compatible change)."""
    _schemas(config, write=True)


snapshots_app = typer.Typer(
    help="Inspect, drop and rebuild aggregate snapshots (the corrupt-snapshot runbook).", no_args_is_help=True
)
app.add_typer(snapshots_app, name="snapshots")

ServiceArg = Annotated[str, typer.Argument(help="Service, e.g. order.")]
PartitionOpt = Annotated[
    list[int] | None, typer.Option("--partition", "-p", help="Only this partition (repeatable) [default: all].")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@snapshots_app.command("status")
def snapshots_status(
    service: ServiceArg,
    partition: PartitionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Per partition: the checkpoint offset and age, the events end offset and the tail a restart
    replays, live snapshot records and bytes. Read from Kafka (read_committed); no Ray needed."""
    from choreography import snapshots

    settings = _settings(config)
    snapshots.check_partitions(settings, service, partition)
    _require_broker(settings)
    rows = snapshots.status(settings, service, partition)
    if as_json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    table = Table(title=f"Snapshots of {service} ({settings.topic_name(service + '-snapshots')})")
    for col in ("partition", "shard", "checkpoint", "age", "events end", "replay tail", "records", "bytes", "state"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for r in rows:
        age = r.age_s()
        state = f"[red]ignored (corrupt: {r.corrupt[0]})[/]" if r.corrupt else ("ok" if r.checkpoint else "none")
        table.add_row(
            str(r.partition), str(r.shard), "-" if r.checkpoint is None else str(r.checkpoint),
            "-" if age is None else f"{age:,.0f}s", str(r.events_end), str(r.tail), str(r.records),
            f"{r.bytes:,}", state,
        )  # fmt: skip
    console.print(table)


@snapshots_app.command("drop")
def snapshots_drop(
    service: ServiceArg, partition: PartitionOpt = None, yes: YesOpt = False, config: ConfigOpt = None
) -> None:
    """Make the shards ignore the snapshots of the partition(s) and replay them from the event log.

    In one transaction per owning shard, written with the shard's own transactional.id (which
    fences the running instance), every snapshotted aggregate is reset to its initial state at
    version 0 and the checkpoint to offset 0. Running owning shards are then restarted, so they
    rehydrate from offset 0 and end in the same state. Nothing is lost: the event log is the truth."""
    from choreography import snapshots

    settings = _settings(config)
    chosen = snapshots.check_partitions(settings, service, partition)
    shards = snapshots.shards_of(settings, service, partition)
    _confirm(yes, f"Drop the snapshots of {service} partitions {chosen} and restart shards {shards}?")
    _require_broker(settings)
    with console.status("Writing the reset transaction..."):
        reset = snapshots.drop(settings, service, partition)
    console.print(f"Reset {sum(reset.values())} snapshots in partitions {sorted(reset)}.")
    running = snapshots.running_shards(settings, service, shards) if _connect_ray(settings) else {}
    if not running:
        console.print("No running shard found: each replays its partitions from offset 0 when it next starts.")
        return
    with console.status(f"Restarting {service} shards {sorted(running)} (replaying the event log)..."):
        infos = snapshots.restart_shards(running)
    for n, info in sorted(infos.items()):
        events, seconds = info.get("rehydrated_events", 0), info.get("rehydration_s", 0.0)
        console.print(f"shard {n}: serving again, rehydrated {events:,} events in {seconds:.1f}s")


@snapshots_app.command("rebuild")
def snapshots_rebuild(
    service: ServiceArg, partition: PartitionOpt = None, yes: YesOpt = False, config: ConfigOpt = None
) -> None:
    """Write a complete, fresh snapshot of the partition(s) from the event log.

    Rebuild = drop (see `drop`), restart the owning shards so they rehydrate from the event log
    alone, then have each write a snapshot of every aggregate it holds and a checkpoint at the end
    of its log. The shards refuse commands while they replay; clients retry. A shard that is not
    running is started for the rebuild and stopped afterwards."""
    from choreography import snapshots

    settings = _settings(config)
    chosen = snapshots.check_partitions(settings, service, partition)
    _confirm(yes, f"Rebuild the snapshots of {service} partitions {chosen} (their shards restart)?")
    _require_broker(settings)
    if not _connect_ray(settings):
        _start_ray(settings)
    with console.status("Rebuilding...") as progress:
        rows = snapshots.rebuild(settings, service, partition, report=lambda line: progress.update(line))
    _print_table(
        f"Rebuilt snapshots of {service}",
        ["partition", "checkpoint", "events end", "records", "bytes"],
        [(r.partition, r.checkpoint, r.events_end, r.records, f"{r.bytes:,}") for r in rows],
    )


def _confirm(yes: bool, question: str) -> None:
    if not yes and not typer.confirm(question, default=False):
        raise typer.Abort()


def _connect_ray(settings: Settings) -> bool:
    """Join the running Ray cluster ($RAY_ADDRESS or the local one). False when none runs."""
    import os

    import ray

    if ray.is_initialized():
        return True
    try:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", namespace=settings.namespace,
                 logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
    except ConnectionError:
        return False
    return True


def _start_ray(settings: Settings) -> None:
    import ray

    ray.init(namespace=settings.namespace, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


dlq_app = typer.Typer(help="Inspect and redrive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


STAGE_HELP = "Only letters of this stage: policy, shard, projection, or e.g. 'projection orders' (repeatable)."


@dlq_app.command("list")
def dlq_list(config: ConfigOpt = None) -> None:
    """List dead letters: where each came from, who gave up on it and why, and whether a redrive
    has dealt with it (`done`)."""
    from choreography.dlq import read_dead_letters
    from choreography.redrive import done_marks

    settings = _settings(config)
    _require_broker(settings)
    letters = read_dead_letters(settings.kafka.client_config(), settings.topic_name(DLQ_TOPIC))
    marks = done_marks(settings)
    _print_table(
        f"{len(letters)} dead letters, {sum(lt.letter_id in marks for lt in letters)} done",
        ["dlq offset", "source", "stage", "error", "done"],
        [
            (lt.dlq_offset, f"{lt.source_topic}[{lt.partition}]@{lt.offset}", lt.stage, lt.error,
             marks[lt.letter_id].get("result", "yes") if lt.letter_id in marks else "")
            for lt in letters
        ],
    )  # fmt: skip


@dlq_app.command("redrive")
def dlq_redrive(
    offsets: Annotated[list[int] | None, typer.Argument(help="DLQ offsets to redrive (see `choreo dlq list`).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Redrive every dead letter not done yet.")] = False,
    offset: Annotated[
        list[int] | None, typer.Option("--offset", "-o", help="A DLQ offset to redrive (repeatable).")
    ] = None,
    stage: Annotated[list[str] | None, typer.Option("--stage", "-s", help=STAGE_HELP)] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the stage that gave up on each dead letter again, on the parked message, decided
    afresh as of now (fix the cause first). Nothing is appended to an event store topic.

    policy: the event goes through the service's policies and their commands are produced.
    shard: the command is decided by the shard that owns its aggregate.
    projection: the event's rows go into each table that does not hold its position yet.

    Each letter gets a done mark in the same transaction; done letters are
    skipped, so a second redrive has no effect. A message that fails again
    is dead-lettered again with the new error; its old letter is marked done.

    Needs Ray: the shards and projection hosts of a running deployment are
    used; missing ones are started for the redrive and stopped afterwards."""
    from choreography.dlq import read_dead_letters
    from choreography.redrive import Deployment, Redriver, redriven_topic, select

    settings = _settings(config)
    _require_broker(settings)
    redriven_topic(settings)
    letters = read_dead_letters(settings.kafka.client_config(), settings.topic_name(DLQ_TOPIC))
    chosen = select(letters, all_=all_, offsets=[*(offsets or []), *(offset or [])], stages=stage or [])
    if not chosen:
        console.print("No dead letters to redrive.")
        return
    if not _connect_ray(settings):
        _start_ray(settings)
    deployment = Deployment(settings)
    redriver = Redriver(settings, deployment.shard, deployment.host)
    try:
        with console.status(f"Redriving {len(chosen)} dead letters..."):
            results = redriver.run(chosen)
    finally:
        redriver.close()
        deployment.close()
    _print_table(
        "Redrive",
        ["dlq offset", "source", "stage", "result", "what happened"],
        [(r.letter.dlq_offset, f"{r.letter.source_topic}[{r.letter.partition}]@{r.letter.offset}", r.letter.stage,
          r.result, r.detail) for r in results],
    )  # fmt: skip
    counts = {k: sum(r.result == k for r in results) for k in ("done", "parked again", "skipped", "failed")}
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()))
    if counts["failed"]:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user and environment errors print one red line and exit 1 (usage errors 2),
    never a stack trace."""
    from confluent_kafka import KafkaException

    try:
        app(args=argv, prog_name="choreo", standalone_mode=False)
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
    bootstrap = _loaded[-1].kafka.bootstrap_servers if _loaded else "the configured address"
    if "transport" in text.lower() or "brokers are down" in text.lower() or "timed out" in text.lower():
        return str(_no_broker(bootstrap))
    return f"Kafka at {bootstrap}: {text}"


if __name__ == "__main__":
    main()

"""`choreo demo` and `choreo loadtest`: drive the declared workload through the whole choreography."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from choreography.broker import LocalBroker
from choreography.cli.common import (
    ConfigOpt,
    app,
    console,
    err_console,
    is_local,
    print_table,
    progress_bar,
    require_broker,
    running_system,
    settings_for,
    wait_projection_caught_up,
)
from choreography.config import ConfigError, Settings
from choreography.errors import ProjectionTimeout

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
    """Start Kafka if needed, run the declared workload's sagas end to end, summarise from ClickHouse.

    With the reference app's workload every compensation path shows up: declined cards,
    undeliverable addresses, customer cancels and orders for a scarce SKU that runs out."""
    from choreography.loadtest import LoadSpec, LoadTest, SagaObserver

    settings = settings_for(config)
    if start_kafka and is_local(settings.kafka.bootstrap_servers):
        port = int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])
        with console.status("Starting Kafka..."):
            status, started = LocalBroker(port=port).start()
        console.print(f"Kafka {'started' if started else 'already running'} on {status.bootstrap}")
    run = f"demo{int(time.time())}"
    load = _workload(settings, workload, run, seed, mix)
    with running_system(config) as system:
        system.submit_many(load.setup())
        test = LoadTest(system, LoadSpec(mode="closed", sagas=sagas, concurrency=min(sagas, 1000)), load, run)
        observer = SagaObserver(system, run, load)
        observer.start()
        with progress_bar() as progress:
            task = progress.add_task("Sagas finished", total=sagas)
            tick = lambda t, o, started: progress.update(task, completed=len(o.ended))  # noqa: E731
            seconds = test.run_load(observer, tick)
            test.drain(observer, time.monotonic() - seconds, tick)
        observer.stop_flag.set()
        elapsed = max(v[1] for v in observer.ended.values()) - min(test.started_at.values()) if observer.ended else 0.0
        with console.status("Waiting for the projections to catch up..."):
            for name in settings.projections:  # the summary reads them
                wait_projection_caught_up(system, settings, name)
        summary = system.query(load.summary_sql, {"run": run + "-"}) if hasattr(load, "summary_sql") else None
        first = next(iter(test.started_at))
        trail = system.saga(first) if "events_raw" in settings.projections else None
    done = len(observer.ended)
    console.print(
        f"{done}/{sagas} sagas ended in {elapsed:.1f}s ({done / elapsed if elapsed else 0:,.0f} sagas/s through the "
        f"whole choreography): "
        + ", ".join(f"{n} {k}" for k, n in Counter(v[0] for v in observer.ended.values()).items())
    )
    if summary is not None:
        print_table("Summary (read back from ClickHouse)", summary.columns, summary.rows)
    if trail is not None:
        print_table(f"Saga {first}", ["service", "event", "version"], [(r[1], r[2], r[4]) for r in trail.rows])
    if done < sagas:
        raise ProjectionTimeout(f"only {done} of {sagas} sagas ended; see `choreo lag` for the consumer that is behind")


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
    """Drive the declared workload; report sagas/s, latencies, stages, errors and invariants.

    Runs against a local system by default, or the Ray cluster in RAY_ADDRESS. The reference
    app's workload takes --mix lines=N, stockouts=, declines=, ship_failures=, cancels= (shares
    between 0 and 1). Exits 1 when an invariant breaks."""
    from rich.live import Live

    from choreography.loadtest import LoadSpec, LoadTest, SagaObserver, new_run_id, write_outputs
    from choreography.system import System

    settings = _with_shards(settings_for(config), shards or [])
    run = new_run_id()
    load = _workload(settings, workload, run, seed, mix)
    require_broker(settings)
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
    if report["cpu"]:
        cpu = Table(title=f"CPU per role over the run ({report['completed']:,} orders completed)")
        for col in ("role", "processes", "CPU s", "CPU ms/order", "share of one core", "Kafka txns/order"):
            cpu.add_column(col, justify="left" if col == "role" else "right")
        for row in report["cpu"]:
            txns = f"{row['transactions_per_order']:.2f}" if row["transactions"] else ""
            cpu.add_row(row["role"], str(row["processes"]), f"{row['cpu_s']:,.1f}",
                        f"{row['cpu_ms_per_order']:.2f}", f"{row['share_of_one_core']:.0%}", txns)  # fmt: skip
        console.print(cpu)

"""Operations: projections, schemas, snapshots and dead letters."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from choreography.cli.common import (
    ConfigOpt,
    PartitionOpt,
    ServiceArg,
    YesOpt,
    app,
    confirm,
    connect_ray,
    console,
    end_offsets_of,
    print_table,
    require_broker,
    running_system,
    settings_for,
    start_ray,
)
from choreography.config import ConfigError
from events.log.topics import DLQ_TOPIC

projections_app = typer.Typer(help="Inspect and rebuild ClickHouse projections.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


@projections_app.command("list")
def projections_list(config: ConfigOpt = None) -> None:
    """Show each projection's tables, events and rows stored, poison and parked events."""
    settings = settings_for(config)
    with running_system(config, policies=False) as system:
        status = system.projection_status()
    print_table(
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
    settings = settings_for(config)
    if name not in settings.projections:
        raise ValueError(f"unknown projection {name!r}; known: {sorted(settings.projections)}")
    with running_system(config, policies=False) as system:
        ends = end_offsets_of(settings, settings.projections[name].topics)
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


schemas_app = typer.Typer(
    help="Check that every declared event stays readable: compare its JSON schema with the committed snapshot.",
    no_args_is_help=True,
)
app.add_typer(schemas_app, name="schemas")


def _schemas(config: Path | None, write: bool) -> None:
    from events.schemas import run

    settings = settings_for(config)
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

    settings = settings_for(config)
    snapshots.check_partitions(settings, service, partition)
    require_broker(settings)
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

    settings = settings_for(config)
    chosen = snapshots.check_partitions(settings, service, partition)
    shards = snapshots.shards_of(settings, service, partition)
    confirm(yes, f"Drop the snapshots of {service} partitions {chosen} and restart shards {shards}?")
    require_broker(settings)
    with console.status("Writing the reset transaction..."):
        reset = snapshots.drop(settings, service, partition)
    console.print(f"Reset {sum(reset.values())} snapshots in partitions {sorted(reset)}.")
    running = snapshots.running_shards(settings, service, shards) if connect_ray(settings) else {}
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

    settings = settings_for(config)
    chosen = snapshots.check_partitions(settings, service, partition)
    confirm(yes, f"Rebuild the snapshots of {service} partitions {chosen} (their shards restart)?")
    require_broker(settings)
    if not connect_ray(settings):
        start_ray(settings)
    with console.status("Rebuilding...") as progress:
        rows = snapshots.rebuild(settings, service, partition, report=lambda line: progress.update(line))
    print_table(
        f"Rebuilt snapshots of {service}",
        ["partition", "checkpoint", "events end", "records", "bytes"],
        [(r.partition, r.checkpoint, r.events_end, r.records, f"{r.bytes:,}") for r in rows],
    )


dlq_app = typer.Typer(help="Inspect and redrive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


STAGE_HELP = "Only letters of this stage: policy, shard, projection, or e.g. 'projection orders' (repeatable)."


@dlq_app.command("list")
def dlq_list(config: ConfigOpt = None) -> None:
    """List dead letters: where each came from, who gave up on it and why, and whether a redrive
    has dealt with it (`done`)."""
    from choreography.redrive import done_marks
    from events.log.dlq import read_dead_letters

    settings = settings_for(config)
    require_broker(settings)
    letters = read_dead_letters(settings.kafka.client_config(), settings.topic_name(DLQ_TOPIC))
    marks = done_marks(settings)
    print_table(
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
    from choreography.redrive import Deployment, Redriver, redriven_topic, select
    from events.log.dlq import read_dead_letters

    settings = settings_for(config)
    require_broker(settings)
    redriven_topic(settings)
    letters = read_dead_letters(settings.kafka.client_config(), settings.topic_name(DLQ_TOPIC))
    chosen = select(letters, all_=all_, offsets=[*(offsets or []), *(offset or [])], stages=stage or [])
    if not chosen:
        console.print("No dead letters to redrive.")
        return
    if not connect_ray(settings):
        start_ray(settings)
    deployment = Deployment(settings)
    redriver = Redriver(settings, deployment.shard, deployment.host)
    try:
        with console.status(f"Redriving {len(chosen)} dead letters..."):
            results = redriver.run(chosen)
    finally:
        redriver.close()
        deployment.close()
    print_table(
        "Redrive",
        ["dlq offset", "source", "stage", "result", "what happened"],
        [(r.letter.dlq_offset, f"{r.letter.source_topic}[{r.letter.partition}]@{r.letter.offset}", r.letter.stage,
          r.result, r.detail) for r in results],
    )  # fmt: skip
    counts = {k: sum(r.result == k for r in results) for k in ("done", "parked again", "skipped", "failed")}
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()))
    if counts["failed"]:
        raise typer.Exit(1)

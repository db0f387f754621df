"""Commands and reads: submit, state, history, saga, query, lag, validate."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from choreography.cli.common import (
    ConfigOpt,
    app,
    console,
    print_table,
    require_broker,
    running_system,
    settings_for,
)
from choreography.config import validate_cluster_file
from choreography.errors import InvalidCommand

# ---- config -----------------------------------------------------------------------


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="Cluster file.")] = Path("cluster.yaml")) -> None:
    """Validate a cluster file with Ray's cluster-launcher schema and Choreo's topology model."""
    settings = validate_cluster_file(config)
    console.print(
        f"[green]{config} is valid[/]: {len(settings.topics)} topics, services "
        + ", ".join(f"{n}={s.shards} shards" for n, s in settings.services.items())
    )


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

    command = settings_for(config).registry().parse_command(command_type, data)  # validate before starting Ray
    with running_system(config) as system:
        events = system.submit(command)
    print_table(
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
    settings = settings_for(config)
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    with running_system(config, projections=False, policies=False) as system:
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
    from events.log.reader import read_topic
    from events.log.topics import events_topic, partition_for

    settings = settings_for(config)
    if service not in settings.services:
        raise ValueError(f"unknown service {service!r}; known: {sorted(settings.services)}")
    require_broker(settings)
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
    print_table(
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
    with running_system(config) as system:
        result = system.query(sql)
    print_table(sql, result.columns, result.rows)


@app.command()
def lag(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 2.0,
    config: ConfigOpt = None,
) -> None:
    """Per consumer group (shards, policies, projections): committed offset, end offset, lag, events/s."""
    from rich.live import Live

    from choreography.lag import consumer_lag, with_rates

    settings = settings_for(config)
    require_broker(settings)
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


@app.command()
def saga(
    saga_id: Annotated[str, typer.Argument(help="The saga's correlation id (with the reference app: an order id).")],
    config: ConfigOpt = None,
) -> None:
    """Print one saga's cross-service event trail, in order: its audit log (needs the events_raw projection)."""
    with running_system(config) as system:
        trail = system.saga(saga_id)
    if not trail.rows:
        raise ValueError(f"no events correlated with {saga_id!r}")
    print_table(
        f"Saga {saga_id}",
        ["time", "service", "event", "aggregate", "version", "payload"],
        [(str(r[0]), r[1], r[2], r[3], r[4], r[7]) for r in trail.rows],
    )

"""Seeing the choreography: `graph` draws the map of who reacts to what, `stuck` lists the sagas
that have not reached their end and who owes their next step, `trace` shows one saga's spans."""

from __future__ import annotations

import json
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from choreography.cli.common import (
    ConfigOpt,
    app,
    console,
    err_console,
    print_table,
    require_broker,
    running_system,
    settings_for,
)
from choreography.graph import choreography_map, embed, embedded, render
from choreography.lag import EdgeLoad, sample_load
from choreography.traces import render_tree, span_json


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"
    png = "png"


@app.command()
def graph(
    config: Annotated[
        Path | None,
        typer.Argument(help="Cluster file [default: $CHOREO_CONFIG, else cluster.yaml].", envvar="CHOREO_CONFIG"),
    ] = None,
    fmt: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="mermaid and dot are text; svg and png need the graph extra.")
    ] = GraphFormat.mermaid,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file [default: stdout].")] = None,
    embed_in: Annotated[
        Path | None, typer.Option("--embed", help="Write the Mermaid map into this markdown file, between its markers.")
    ] = None,
    check: Annotated[
        Path | None, typer.Option(help="Exit 1 when the Mermaid map in this markdown file differs from the wiring.")
    ] = None,
    live: Annotated[
        bool, typer.Option(help="Label each policy and projection edge with its consumer's events/s and lag (Kafka).")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="--live: seconds between the two offset samples.")] = 3.0,
) -> None:
    """Draw the choreography from the declared wiring: services, the events each emits, which
    policy of which service reacts to which event and the command it sends, and which projections
    read which topics. Mermaid by default; `--format svg -o map.svg` renders with graphviz-pure.
    `--live` labels every policy and projection edge with the events/s and the lag of the consumer
    group behind it, on that topic, from two samples of the Kafka offsets."""
    settings = settings_for(config)
    the_map = choreography_map(settings)
    mermaid = the_map.mermaid()
    if check is not None:
        found = embedded(check.read_text())
        if found != mermaid:
            why = "has no choreography map" if found is None else "has a choreography map that differs from the wiring"
            err_console.print(f"[red]{check} {why}[/]: run `choreo graph --embed {check}`")
            raise typer.Exit(1)
        console.print(f"[green]{check}: the choreography map matches the wiring[/]")
        return
    if embed_in is not None:
        embed_in.write_text(embed(embed_in.read_text() if embed_in.exists() else "", mermaid))
        console.print(f"wrote the choreography map into {embed_in}")
        return
    load: EdgeLoad = {}
    if live:
        require_broker(settings)
        with err_console.status(f"Sampling consumer offsets for {interval:g}s..."):
            load = sample_load(settings, interval)
    if fmt in (GraphFormat.svg, GraphFormat.png):
        if output is None:
            raise ValueError(f"--format {fmt} writes a binary file: give it with --output, e.g. -o map.{fmt}")
        output.write_bytes(render(the_map.dot(load), fmt.value))
        console.print(f"wrote {output}")
        return
    text = the_map.mermaid(load) if fmt is GraphFormat.mermaid else the_map.dot(load)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(text: str) -> float:
    """'30s', '5m', '1.5h', '250ms' or plain seconds -> seconds."""
    match = DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 5m, 2h or a number of seconds")
    return float(match.group(1)) * UNIT_S[match.group(2) or "s"]


@app.command()
def stuck(
    older_than: Annotated[str, typer.Option(help="Only sagas idle at least this long: 30s, 5m, 2h...")] = "30s",
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many sagas.")] = 50,
    scan: Annotated[int, typer.Option(min=1, help="Look at this many most recently active idle sagas.")] = 5_000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per saga instead of a table.")] = False,
    config: ConfigOpt = None,
) -> None:
    """List sagas that have not reached a terminal state: the last event, the service whose policy
    owes the next step, and what that step waits on (lag, a dead letter, a failed shard). Reads
    the events_raw projection. Exits 1 when any saga is stuck, 0 when none is."""
    idle = seconds(older_than)
    with running_system(config) as system:
        found = system.stuck(older_than_s=idle, limit=limit, scan=scan)
    if as_json:
        for saga in found:
            sys.stdout.write(json.dumps(saga.as_dict()) + "\n")
    elif found:
        print_table(
            f"Stuck sagas (idle >= {older_than})",
            ["saga", "last event", "idle", "owner", "next step", "waiting on"],
            [
                (s.saga_id, f"{s.last.envelope.aggregate_type} {s.last.envelope.event_type}", f"{s.age_s:,.0f}s",
                 s.owner, s.next_step, "; ".join(s.waiting_on) or "-")
                for s in found
            ],
        )  # fmt: skip
    else:
        console.print(f"[green]no saga idle for {older_than} or more is waiting[/]")
    if found:
        raise typer.Exit(1)


@app.command()
def trace(
    saga_id: Annotated[str, typer.Argument(help="The saga's id: its correlation id (an order's is the order id).")],
    as_json: Annotated[bool, typer.Option("--json", help="The spans as JSON lines (OpenTelemetry fields).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print one saga's derived trace: a span per command handled and per policy reaction, each
    under its cause, with the time per hop split into waiting in Kafka and processing. Built from
    the saga's events in the events_raw projection and the declared wiring (nothing on the write
    path). Exits 1 when the saga has no events, 2 when its trace is not one connected tree."""
    with running_system(config) as system:
        found = system.trace(saga_id)
    if not found.spans:
        err_console.print(f"no events for saga {saga_id!r} in events_raw (yet): is the id right?")
        raise typer.Exit(1)
    if as_json:
        for span in found.spans:
            sys.stdout.write(json.dumps(span_json(span)) + "\n")
    else:
        for line in render_tree(found):
            sys.stdout.write(line + "\n")
    if not found.connected:
        raise typer.Exit(2)

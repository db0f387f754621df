"""`choreo deploy`, `choreo status` and `choreo down`: a deployment that outlives its driver on a
Ray cluster ($RAY_ADDRESS, or the one running on this machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from choreography.cli.common import (
    ConfigOpt,
    app,
    connect_ray,
    console,
    print_table,
    progress_bar,
    require_broker,
    settings_for,
)
from choreography.config import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


@app.command()
def deploy(
    config: ConfigOpt = None,
    start_ray: Annotated[
        bool, typer.Option(help="Start a local Ray head when no cluster runs ($RAY_ADDRESS unset).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every shard to serve.")] = 600,
) -> None:
    """Deploy the services of the cluster file as named, detached Ray actors, and wait until every
    shard serves and every consumer caught up. Idempotent: running actors stay, dead ones are
    replaced. The deployment outlives this command; stop it with `choreo down`."""
    from choreography.deployment import deploy as deploy_system

    settings = settings_for(config)
    require_broker(settings)
    _join_ray(settings, start_ray)
    with progress_bar() as bar:
        task = bar.add_task("deploying", total=None)

        def show(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        deploy_system(settings, show, timeout)
    _print_status(settings)
    console.print(f"[green]deployed[/] in Ray namespace [bold]{settings.namespace}[/]; stop it with `choreo down`")


@app.command()
def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every actor of the deployment: node, partitions, phase (rehydrating, serving, failed and
    why), restarts, consumer lag, aggregates in memory and memory used."""
    from choreography.deployment import deployed_settings

    # As deployed: `choreo scale` may have changed counts since the file was written.
    settings = deployed_settings(_joined(settings_for(config)).namespace)  # NotDeployed when none runs
    if as_json:
        from choreography.deployment import status as actor_status

        print(json.dumps([s.as_dict() for s in actor_status(settings)], indent=2))
        return
    _print_status(settings)


@app.command()
def scale(
    service: Annotated[str, typer.Argument(help="The service to rescale, as named in the cluster file.")],
    shards: Annotated[
        int | None, typer.Option("--shards", min=1, help="New shard count (1 to the partition count), moved live.")
    ] = None,
    runners: Annotated[
        int | None, typer.Option("--runners", min=0, help="New policy-runner count (restarts the service's runners).")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a deployed service's shard or policy-runner count while commands keep flowing.
    Shards: partitions move one at a time; only the moving one pauses, and commands for it are
    retried at its new owner. Runners: they stop after committing, and the new set starts where
    they left off. `choreo deploy` with other counts in the cluster file does the same."""
    from choreography.deployment import attach

    if shards is None and runners is None:
        raise ValueError("say what to change: --shards N, --runners N, or both")
    system = attach(_joined(settings_for(config)).namespace)
    if as_json:
        print(json.dumps(_rescale(system, service, shards, runners, lambda _: None), indent=2))
        return
    with progress_bar() as bar:
        task = bar.add_task(f"rescaling {service}", total=None)
        done = _rescale(system, service, shards, runners, lambda what: bar.update(task, description=what))
    if "shards" in done:
        report = done["shards"]
        rows = [(m["partition"], m["source"], m["target"], f"{m['paused_s']:.2f}") for m in report["moves"]]
        print_table(
            f"{service}: {report['before']} -> {report['after']} shards", ["partition", "from", "to", "paused s"], rows
        )
        console.print(
            f"[green]{service} runs {report['after']} shards[/] ({len(rows)} partitions moved in "
            f"{report['seconds']:.1f}s; longest pause {report['longest_pause_s']:.2f}s)"
        )
    if "runners" in done:
        console.print(
            f"[green]{service} runs {runners} policy runners[/] (its reactions paused "
            f"{done['runners']['paused_s']:.1f}s)"
        )


@app.command()
def down(config: ConfigOpt = None) -> None:
    """Drain and stop the deployment: each actor finishes its batch and commits, then stops.
    Topics, snapshots and analytics stay; `choreo deploy` brings it back with its state."""
    from choreography.deployment import deployed_settings
    from choreography.deployment import down as stop_all

    settings = deployed_settings(_joined(settings_for(config)).namespace)
    stopped = stop_all(settings, lambda line: console.print(f"  {line}"))
    console.print(f"[green]stopped[/] {len(stopped)} actors of namespace [bold]{settings.namespace}[/]")


def _rescale(
    system: Any, service: str, shards: int | None, runners: int | None, say: Callable[[str], None]
) -> dict[str, Any]:
    done: dict[str, Any] = {"service": service}
    if shards is not None:
        done["shards"] = system.scale(service, shards, say).as_dict()
    if runners is not None:
        done["runners"] = {"after": runners, "paused_s": system.scale_runners(service, runners, say)}
    return done


def _print_status(settings: Settings) -> None:
    from choreography.deployment import status as actor_status

    rows: list[tuple[Any, ...]] = []
    for s in actor_status(settings):
        phase = s.phase or s.state.lower()
        if s.detail:
            phase += f" ({s.detail})"
        rows.append((
            s.name, s.node, ",".join(map(str, s.partitions)), phase, s.restarts,
            "" if s.lag is None else f"{s.lag:,}", "" if s.aggregates is None else f"{s.aggregates:,}",
            "" if s.rss_mb is None else f"{s.rss_mb:,.0f}",
        ))  # fmt: skip
    columns = ["actor", "node", "partitions", "phase", "restarts", "lag", "aggregates", "RSS MB"]
    print_table(f"deployment {settings.namespace}", columns, rows)


def _joined(settings: Settings) -> Settings:
    if not connect_ray(settings):
        raise ValueError("no Ray cluster runs here (set RAY_ADDRESS, or run `choreo deploy`)")
    return settings


def _join_ray(settings: Settings, start: bool) -> None:
    """Join the cluster; with none running, start a local head that outlives this command."""
    import os

    if connect_ray(settings):
        return
    if os.environ.get("RAY_ADDRESS"):
        raise ValueError(f"cannot join the Ray cluster at RAY_ADDRESS={os.environ['RAY_ADDRESS']}")
    if not start:
        raise ValueError("no Ray cluster runs here; set RAY_ADDRESS or drop --no-start-ray")
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        raise ValueError("no `ray` command found to start a local Ray head")
    console.print("no Ray cluster runs here: starting a local head (`ray stop` ends it)")
    subprocess.run(
        [ray_cli, "start", "--head", "--disable-usage-stats", "--include-dashboard=false"],
        check=True, capture_output=True,
    )  # fmt: skip
    if not connect_ray(settings):
        raise ValueError("the local Ray head started but cannot be joined")

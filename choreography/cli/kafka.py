"""`choreo kafka`: a local Apache Kafka broker (KRaft) for laptops and tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import yaml

from choreography.broker import LocalBroker, LocalCluster
from choreography.cli.common import (
    ConfigOpt,
    DataDirOpt,
    PortOpt,
    app,
    console,
    print_table,
    require_broker,
    settings_for,
)

kafka_app = typer.Typer(help="Run a local Apache Kafka broker, or a cluster of them (KRaft).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")

# ---- kafka ------------------------------------------------------------------------


BrokersOpt = Annotated[
    int | None,
    typer.Option(
        "--brokers", min=1, max=9,
        help="Run a local cluster of this many KRaft brokers (node N on port + 2(N-1)); 3 survives the loss of one.",
    ),
]  # fmt: skip
BrokerOpt = Annotated[
    int | None, typer.Option("--broker", min=1, help="Only this node of the local cluster (1, 2, 3...).")
]


def _cluster(
    brokers: int | None, broker: int | None, port: int, data_dir: Path | None, heap: str = "1g"
) -> LocalCluster | None:
    """The local cluster the options name, or the one started here before (its directory
    exists); None for a single broker."""
    if brokers is None:
        earlier = LocalCluster(3, port=port, data_dir=data_dir)
        brokers = len(list(earlier.data_dir.glob("node-*"))) if earlier.id_file.exists() else None
    if (brokers or 1) == 1 and broker is None:
        return None
    return LocalCluster(brokers or 3, port=port, data_dir=data_dir, heap=heap)


@kafka_app.command("start")
def kafka_start(
    port: PortOpt = 9092,
    data_dir: DataDirOpt = None,
    heap: Annotated[str, typer.Option(help="JVM heap size (per broker).")] = "1g",
    config: ConfigOpt = None,
    topics: Annotated[bool, typer.Option(help="Create the topics declared in the config.")] = True,
    brokers: BrokersOpt = None,
    broker: BrokerOpt = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Serve clients over SASL_SSL: a throwaway CA and certificate (keytool) and the SCRAM-SHA-512 "
            "user 'choreo', whose password is CHOREO_KAFKA_PASSWORD when set, else generated. Prints the "
            "metadata.kafka block for cluster.yaml.",
        ),
    ] = False,
) -> None:
    """Fetch the broker jars with Maven (once), format storage, start the broker (or a local
    cluster with --brokers 3; --broker N starts one node of it again) and create topics."""
    cluster = _cluster(brokers, broker, port, data_dir, heap)
    if cluster is not None and secure:
        raise typer.BadParameter("--secure runs a single broker; leave out --brokers/--broker")
    if cluster is not None:
        with console.status(f"Starting {len(cluster.nodes) if broker is None else 1} Kafka broker(s)..."):
            started = cluster.start(broker)
        status = cluster.status()
        console.print(f"[green]Kafka brokers {started or 'already'} running[/]: {status.bootstrap}")
        if topics and broker is None:
            _create_topics(config, status.bootstrap)
        return
    single = LocalBroker(port=port, data_dir=data_dir, heap=heap, secure=secure)
    with console.status(f"Starting Kafka on 127.0.0.1:{port}..."):
        s, launched = single.start()
    how = " over SASL_SSL, SCRAM-SHA-512" if single.secure else ""
    if launched:
        console.print(f"[green]Kafka started[/] on {s.bootstrap}{how} (pid {s.pid}, data {s.data_dir})")
    else:
        who = f"pid {s.pid}" if s.pid else "not started by choreo"
        console.print(f"[yellow]Kafka is already running[/] on {s.bootstrap}{how} ({who})")
    security = single.client_config()
    security.pop("bootstrap.servers")
    if security:
        block = {"kafka": {"bootstrap_servers": s.bootstrap, "security": security}}
        console.print("Clients connect with this block under `metadata:` in cluster.yaml (the password by reference):")
        console.print(yaml.safe_dump(block, sort_keys=False), markup=False, highlight=False)
    if topics:
        _create_topics(config, f"127.0.0.1:{port}", security)


def _create_topics(config: Path | None, bootstrap: str, security: dict[str, str] | None = None) -> None:
    from choreography.topology import ensure_topics

    settings = settings_for(config)
    kafka = {"bootstrap_servers": bootstrap} | ({"security": security} if security is not None else {})
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update=kafka)})
    require_broker(settings)
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    created = ensure_topics(settings)
    console.print(f"Topics: {len(created)} created, {len(settings.all_topics()) - len(created)} already present")


@kafka_app.command("stop")
def kafka_stop(
    port: PortOpt = 9092, data_dir: DataDirOpt = None, brokers: BrokersOpt = None, broker: BrokerOpt = None
) -> None:
    """Stop the broker (or the local cluster, or its node --broker N) that `choreo kafka start` started."""
    cluster = _cluster(brokers, broker, port, data_dir)
    if cluster is not None:
        with console.status("Stopping Kafka..."):
            stopped = cluster.stop(broker)
        console.print(
            f"[green]Kafka brokers {stopped} stopped[/]" if stopped else "No choreo-managed broker is running."
        )
        return
    with console.status("Stopping Kafka..."):
        done = LocalBroker(port=port, data_dir=data_dir).stop()
    console.print("[green]Kafka stopped[/]" if done else "No choreo-managed broker is running.")


@kafka_app.command("status")
def kafka_status(port: PortOpt = 9092, data_dir: DataDirOpt = None, brokers: BrokersOpt = None) -> None:
    """Tell whether the broker answers (for a local cluster: every broker, the active controller
    and the under-replicated partitions). Exit code 1 when none does."""
    cluster = _cluster(brokers, None, port, data_dir)
    if cluster is not None:
        status = cluster.status()
        rows = [
            (node.node_id, b.bootstrap, "running" if b.running else "stopped", b.pid or "",
             "yes" if status.controller == node.node_id else "")
            for node, b in zip(cluster.nodes, status.brokers, strict=True)
        ]  # fmt: skip
        print_table(
            f"local Kafka cluster ({cluster.data_dir})", ["node", "address", "state", "pid", "controller"], rows
        )
        console.print(f"under-replicated partitions: {status.under_replicated}")
        if not any(b.running for b in status.brokers):
            raise typer.Exit(1)
        return
    single = LocalBroker(port=port, data_dir=data_dir)
    s = single.status()
    if s.running:
        who = f"pid {s.pid}" if s.pid else "not started by choreo"
        how = " over SASL_SSL" if single.secure else ""
        console.print(f"[green]running[/] on {s.bootstrap}{how} ({who}), data {s.data_dir}")
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

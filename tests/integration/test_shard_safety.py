"""A shard never serves state it knows is incomplete, never drops a refused saga step silently,
and survives a broker that is unreachable while it starts."""

from __future__ import annotations

import time
import uuid

import ray
from confluent_kafka import Producer

from actors.shard import Shard
from actors.shard_actor import spawn_shard
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.base import Envelope, utc_now
from events.log.dlq import read_dead_letters
from events.log.kafka_io import producer_config
from events.log.topics import partition_for
from shop.messages import registry as shop_registry
from shop.messages.inventory import ShipStock
from shop.messages.orders import OrderLine, OrderPlaced, PlaceOrder, RecordStockReserved
from tests.integration.tcp_proxy import TcpProxy

LINE = (OrderLine(sku="A", quantity=1, unit_price_cents=3),)


def _ids_by_partition(run: str, partitions: int) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for i in range(400):
        found[partition_for(f"{run}-{i}", partitions)].append(f"{run}-{i}")
    return found


def test_a_broken_event_partition_is_refused_not_served(make_settings) -> None:
    settings = make_settings(shards=1, partitions=4)
    ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    ids = _ids_by_partition(run, 4)
    registry = shop_registry()
    first = Shard(shard_config(settings, "order", 0), settings.aggregate("order"), registry)
    assert all(
        o.ok for o in first.handle([PlaceOrder(order_id=ids[p][0], customer_id="c", lines=LINE) for p in range(4)])
    )
    first.close()

    topic = settings.topic_name("order-events")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(topic, key=ids[0][0].encode(), value=b"\x00\xffnot an event", partition=0)
    gap = Envelope(
        event_id=uuid.uuid4().hex,
        event_type="OrderPlaced",
        aggregate_type="order",
        aggregate_id=ids[1][1],
        version=3,
        occurred_at=utc_now(),
        correlation_id=ids[1][1],
        causation_id="x",
    )
    placed = OrderPlaced(order_id=ids[1][1], customer_id="c", lines=LINE, total_cents=3)
    producer.produce(topic, key=ids[1][1].encode(), value=registry.encode_event(gap, placed), partition=1)
    assert producer.flush(10) == 0

    second = Shard(shard_config(settings, "order", 0), settings.aggregate("order"), registry)
    assert set(second.broken) == {0, 1}
    assert "undecodable" in second.broken[0]
    assert "version gap" in second.broken[1]
    outcomes = second.handle([PlaceOrder(order_id=ids[p][2], customer_id="c", lines=LINE) for p in range(4)])
    refused = {o.command_id: o for o in outcomes if not o.ok}
    assert len(refused) == 2
    for o in refused.values():
        assert o.code == "partition_unavailable"
        assert "partition" in o.reason
    assert all(o.ok for o in outcomes if o.command_id not in refused)
    second.close()


def test_a_rejected_policy_command_is_dead_lettered_with_its_code(make_settings, start_system) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings, projections=False, policies=False)
    run = uuid.uuid4().hex[:6]
    registry = shop_registry()
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    bad = [
        ShipStock(sku=f"{run}-sku", order_id=f"{run}-o", command_id=f"{run}-ship"),
        RecordStockReserved(order_id=f"{run}-missing", sku="A", command_id=f"{run}-record"),
    ]
    for cmd in bad:
        producer.produce(
            settings.topic_name(f"{cmd.target}-commands"),
            key=cmd.aggregate_id.encode(),
            value=registry.encode_command(cmd),
            partition=partition_for(cmd.aggregate_id, 2),
        )
    assert producer.flush(10) == 0

    deadline = time.monotonic() + 30
    letters = []
    while time.monotonic() < deadline and len(letters) < 2:
        letters = read_dead_letters(settings.kafka.client_config(), settings.topic_name("choreo-dead-letters"))
        time.sleep(0.3)
    by_topic = {letter.source_topic: letter for letter in letters}
    assert set(by_topic) == {settings.topic_name("inventory-commands"), settings.topic_name("order-commands")}
    assert "not_reserved" in by_topic[settings.topic_name("inventory-commands")].error
    assert "not_found" in by_topic[settings.topic_name("order-commands")].error
    infos = ray.get([shard.info.remote() for shard in system.shards["inventory"]])
    assert [info["rejected"] for info in infos if info["rejected"]] == [{"not_reserved": 1}]


def test_a_shard_started_while_the_broker_is_unreachable_reports_it_and_serves_later(
    make_settings, ray_runtime
) -> None:
    settings = make_settings(shards=1, partitions=2)
    ensure_topics(settings)
    host, port = settings.kafka.bootstrap_servers.split(":")
    proxy = TcpProxy((host, int(port)))
    config = shard_config(settings, "order", 0).model_copy(update={"kafka": {"bootstrap.servers": proxy.address}})
    actor = spawn_shard(config, name=f"blip-{uuid.uuid4().hex[:6]}")
    try:
        deadline = time.monotonic() + 30
        while "broker unavailable" not in (info := ray.get(actor.info.remote(), timeout=60))["detail"]:
            assert time.monotonic() < deadline, f"the shard never said why it waits: {info}"
            time.sleep(0.5)
        assert info["phase"] == "rehydrating"
        time.sleep(3)
        proxy.up()
        deadline = time.monotonic() + 90
        while ray.get(actor.info.remote(), timeout=20)["phase"] != "serving":
            assert time.monotonic() < deadline, "the shard never started serving"
            time.sleep(0.5)
        order = PlaceOrder(order_id=uuid.uuid4().hex, customer_id="c", lines=LINE)
        assert ray.get(actor.handle.remote([order]), timeout=30)[0].ok
    finally:
        ray.kill(actor, no_restart=True)
        proxy.down()


def test_a_partition_held_back_by_another_producers_open_transaction_is_refused_not_served_stale(
    make_settings,
) -> None:
    """A transaction a broker crash left hanging hides every event committed after it from
    read_committed readers. A shard rehydrating past it would decide on stale state and append
    versions that exist already; it waits for the transaction to end, then refuses the partition."""
    settings = make_settings(shards=1, partitions=4)
    ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    ids = _ids_by_partition(run, 4)
    registry = shop_registry()
    config = shard_config(settings, "order", 0).model_copy(update={"held_back_wait_s": 2.0})
    first = Shard(config, settings.aggregate("order"), registry)
    assert first.handle([PlaceOrder(order_id=ids[0][0], customer_id="c", lines=LINE)])[0].ok

    topic = settings.topic_name("order-events")
    hanging = Producer(producer_config(settings.kafka.client_config(), f"{settings.topic_prefix}hanging"))
    hanging.init_transactions(30)
    hanging.begin_transaction()
    hanging.produce(topic, key=b"x", value=b"never committed", partition=0)
    assert hanging.flush(10) == 0
    # Committed after the open transaction began: invisible to read_committed readers for now.
    assert first.handle([RecordStockReserved(order_id=ids[0][0], sku="A")])[0].ok
    latest = first.state(ids[0][0])
    assert latest[1] > 1
    first.close()
    try:
        second = Shard(config, settings.aggregate("order"), registry)
        assert set(second.broken) == {0}
        assert "an open transaction holds back offsets" in second.broken[0]
        outcome = second.handle([RecordStockReserved(order_id=ids[0][0], sku="A", command_id="again")])[0]
        assert not outcome.ok and outcome.code == "partition_unavailable"
        assert second.handle([PlaceOrder(order_id=ids[1][0], customer_id="c", lines=LINE)])[0].ok
        second.close()
    finally:
        hanging.abort_transaction(30)
    third = Shard(config, settings.aggregate("order"), registry)
    assert third.broken == {}
    assert third.state(ids[0][0]) == latest, "events committed after the open transaction are served once it ended"
    third.close()

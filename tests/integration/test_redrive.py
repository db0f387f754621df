"""`choreo dlq redrive` re-runs the consumer stage that gave up on a message, decided afresh, and
never appends to an event store topic; a done mark makes it idempotent."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import ray
import yaml
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from choreography.cli import main
from choreography.config import Settings
from events.log.dlq import dead_letter_from, send_dead_letter
from events.log.topics import partition_for
from shop.invariants import audit
from shop.messages import AddStock, OrderLine, PlaceOrder
from shop.messages import registry as shop_registry
from shop.messages.inventory import ReserveStock, ShipStock

from .conftest import read_log

EVENT_TOPICS = ("order-events", "inventory-events", "payment-events", "shipping-events")


def cluster_file(settings: Settings, tmp_path: Path) -> Path:
    """The test's settings as a cluster file, for the command line."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"metadata": settings.model_dump(mode="json")}))
    return path


def cli(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code == 0, f"choreo {' '.join(args)} exited {exc.code}"


def raw_messages(settings: Settings, topic: str) -> list:
    """Every committed message of a topic (all partitions), undecoded."""
    name = settings.topic_name(topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": f"probe-{uuid.uuid4().hex}",
         "enable.partition.eof": True, "isolation.level": "read_committed", "auto.offset.reset": "earliest"}
    )  # fmt: skip
    try:
        meta = consumer.list_topics(name, timeout=10).topics[name]
        todo = set(meta.partitions)
        consumer.assign([TopicPartition(name, p, 0) for p in meta.partitions])
        found = []
        while todo:
            for msg in consumer.consume(1000, timeout=2):
                if msg.error() is None:
                    found.append(msg)
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(msg.partition())
        return found
    finally:
        consumer.close()


def inject_letter(settings: Settings, msg, stage: str, error: str) -> None:
    """Park a message as the named stage would have (e.g. after a policy bug, since fixed)."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    send_dead_letter(producer, settings.topic_name("choreo-dead-letters"), dead_letter_from(msg, stage, error))
    assert producer.flush(10) == 0


def event_counts(settings: Settings) -> dict[str, int]:
    return {topic: len(raw_messages(settings, topic)) for topic in EVENT_TOPICS}


def assert_store_sound(settings: Settings) -> None:
    events = [ev for topic in EVENT_TOPICS for ev in read_log(settings, topic)]
    ids = Counter(ev.envelope.event_id for ev in events)
    assert [i for i, n in ids.items() if n > 1] == [], "an event was appended twice"
    result = audit(events)
    assert [v for v in result.violations if "version" in v or "duplicate" in v] == []


def wait_until(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_redriving_a_policy_letter_produces_its_commands_once(make_settings, start_system, tmp_path) -> None:
    settings = make_settings(shards=1, partitions=2)
    # No policy runners: the parked event is redriven, not consumed by a running policy.
    system = start_system(settings, policies=False, projections=False)
    run = uuid.uuid4().hex[:6]
    sku, order_id = f"{run}-sku", f"{run}-o"
    system.submit_many([AddStock(sku=sku, quantity=10)])
    system.submit(PlaceOrder(order_id=order_id, customer_id="c",
                             lines=(OrderLine(sku=sku, quantity=3, unit_price_cents=100),)))  # fmt: skip
    placed = [m for m in raw_messages(settings, "order-events") if m.key() == order_id.encode()]
    assert len(placed) == 1
    inject_letter(settings, placed[0], "policy inventory-0", "RuntimeError: a policy bug, since fixed")
    before = event_counts(settings)
    config = cluster_file(settings, tmp_path)

    cli("dlq", "redrive", "--all", "--config", str(config))

    def reserved() -> int:
        state, _ = system.state("inventory", sku)
        return state.reserved.get(order_id, 0)

    assert wait_until(lambda: reserved() == 3, what="the reservation from the redriven policy")
    cli("dlq", "redrive", "--all", "--config", str(config))
    time.sleep(2)
    assert reserved() == 3
    decoded = [shop_registry().decode_command(m.value()) for m in raw_messages(settings, "inventory-commands")]
    assert [type(c).__name__ for c in decoded] == ["ReserveStock"]
    after = event_counts(settings)
    assert after["order-events"] == before["order-events"], "redrive appended to the event store"
    assert_store_sound(settings)


def test_redriving_a_rejected_command_decides_it_afresh_once(make_settings, start_system, tmp_path, capsys) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings, policies=False, projections=False)
    run = uuid.uuid4().hex[:6]
    sku, order_id = f"{run}-sku", f"{run}-o"
    registry = shop_registry()
    ship = ShipStock(sku=sku, order_id=order_id, command_id=f"{run}-ship")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(settings.topic_name("inventory-commands"), key=sku.encode(), value=registry.encode_command(ship),
                     partition=partition_for(sku, 2))  # fmt: skip
    assert producer.flush(10) == 0
    letters = wait_until(lambda: system.dead_letters(), what="the rejected ShipStock to be parked")
    assert "not_reserved" in letters[0].error
    assert letters[0].stage.startswith("shard ")

    # The cause goes away: stock arrives and the order's reservation is made the normal way.
    system.submit_many([AddStock(sku=sku, quantity=10)])
    system.submit(ReserveStock(sku=sku, order_id=order_id, quantity=2, command_id=f"{run}-reserve"))
    before = event_counts(settings)
    config = cluster_file(settings, tmp_path)

    cli("dlq", "redrive", "--all", "--config", str(config))
    out = capsys.readouterr().out
    assert "1 done, 0 parked again" in out
    state, _ = system.state("inventory", sku)
    assert (state.shipped, state.reserved_total) == (2, 0)
    cli("dlq", "redrive", "--all", "--config", str(config))
    assert "1 skipped" in capsys.readouterr().out
    state, _ = system.state("inventory", sku)
    assert (state.shipped, state.reserved_total) == (2, 0)

    after = event_counts(settings)
    assert after == {**before, "inventory-events": before["inventory-events"] + 1}, "one StockShipped, nothing else"
    values = {letter.value for letter in letters}
    assert not any(m.value() in values for t in EVENT_TOPICS for m in raw_messages(settings, t))
    assert_store_sound(settings)
    cli("dlq", "list", "--config", str(config))
    assert "1 done" in capsys.readouterr().out


def test_a_command_that_fails_again_is_parked_again_and_its_letter_done(make_settings, start_system, tmp_path) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings, policies=False, projections=False)
    run = uuid.uuid4().hex[:6]
    sku = f"{run}-sku"
    ship = ShipStock(sku=sku, order_id=f"{run}-o", command_id=f"{run}-ship")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(settings.topic_name("inventory-commands"), key=sku.encode(),
                     value=shop_registry().encode_command(ship), partition=partition_for(sku, 2))  # fmt: skip
    assert producer.flush(10) == 0
    first = wait_until(lambda: system.dead_letters(), what="the rejected ShipStock to be parked")[0]

    [result] = system.redrive()
    assert result.result == "parked again" and "not_reserved" in result.detail
    letters = system.dead_letters()
    assert len(letters) == 2 and letters[1].stage == first.stage and letters[1].offset == first.offset
    results = system.redrive()
    assert [r.result for r in results] == ["skipped", "parked again"]
    assert event_counts(settings)["inventory-events"] == 0
    assert_store_sound(settings)


def test_redriving_a_projection_letter_inserts_only_absent_rows(make_settings, start_system, tmp_path) -> None:
    # events_raw reads order events only here: an inventory event is absent from it, as a parked one is.
    settings = make_settings(shards=1, partitions=2)
    projections = {**settings.projections, "events_raw": settings.projections["events_raw"].model_copy(
        update={"topics": ["order-events"]})}  # fmt: skip
    settings = settings.model_copy(update={"projections": projections})
    system = start_system(settings, policies=False, metrics=False)
    run = uuid.uuid4().hex[:6]
    sku = f"{run}-sku"
    [added] = system.submit(AddStock(sku=sku, quantity=5))
    events_in = [m for m in raw_messages(settings, "inventory-events") if m.key() == sku.encode()]
    inject_letter(settings, events_in[0], "projection events_raw", "ClickHouseError: refused, since fixed")
    placed = system.submit(PlaceOrder(order_id=f"{run}-o", customer_id="c",
                                      lines=(OrderLine(sku=sku, quantity=1, unit_price_cents=100),)))  # fmt: skip
    system.wait_for(placed, projection="events_raw")
    order_msg = next(m for m in raw_messages(settings, "order-events") if m.key() == f"{run}-o".encode())
    inject_letter(settings, order_msg, "projection events_raw", "ClickHouseError: refused, since fixed")

    def rows(event_id: str) -> int:
        return system.query("SELECT count() FROM events_raw WHERE event_id = %(id)s", {"id": event_id}).scalar()

    placed_id = placed[0].envelope.event_id
    assert (rows(added.envelope.event_id), rows(placed_id)) == (0, 1)
    before = event_counts(settings)
    results = system.redrive(stages=["projection"])
    assert [r.result for r in results] == ["done", "done"]
    assert "inserted into events_raw" in results[0].detail and "already in events_raw" in results[1].detail
    assert (rows(added.envelope.event_id), rows(placed_id)) == (1, 1)
    assert [r.result for r in system.redrive()] == ["skipped", "skipped"]
    # Even without the done mark, the insert is only done if absent.
    host = system.projection_hosts["events_raw"]
    letter = system.dead_letters()[0]
    again = ray.get(host.redrive.remote("events_raw", letter.source_topic, letter.partition, letter.offset,
                                        letter.value))  # fmt: skip
    assert again["inserted"] == [] and again["present"] == ["events_raw"]
    assert (rows(added.envelope.event_id), rows(placed_id)) == (1, 1)
    assert event_counts(settings) == before

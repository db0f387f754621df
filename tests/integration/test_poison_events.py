"""Poison bytes written straight to an event topic land in the dead-letter topic with the reason,
and the choreography keeps flowing around them."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Producer

from events.log.dlq import read_dead_letters
from events.log.topics import partition_for
from shop.messages import AddStock, OrderLine, PlaceOrder


def _wait_terminal(system, order_ids: list[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        states = {oid: system.state("order", oid)[0] for oid in order_ids}
        if all(s.terminal for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.3)


def test_poison_events_are_dead_lettered_and_the_flow_goes_on(make_settings, start_system) -> None:
    settings = make_settings(shards=1, partitions=2)
    system = start_system(settings)
    run = uuid.uuid4().hex[:6]
    system.submit_many([AddStock(sku="P1", quantity=1000)])

    topic = settings.topic_name("order-events")
    poison_partition = partition_for(f"{run}-after", 2)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(topic, key=b"poison", value=b"\x00\xffnot an event", partition=poison_partition)
    producer.produce(
        topic,
        key=b"poison",
        value=b'{"envelope": {"event_type": "OrderTeleported"}, "payload": {}}',
        partition=poison_partition,
    )
    assert producer.flush(10) == 0

    line = (OrderLine(sku="P1", quantity=1, unit_price_cents=700),)
    ids = [f"{run}-after", f"{run}-after-2"]
    system.submit_many([PlaceOrder(order_id=oid, customer_id="c", lines=line) for oid in ids])
    states = _wait_terminal(system, ids)
    assert {s.status.value for s in states.values()} == {"confirmed"}

    dlq = settings.topic_name("choreo-dead-letters")
    # Each consumer of order-events parks both poison messages: three policy runners, the projections.
    wanted = {"policy inventory-0", "policy payment-0", "policy shipping-0", "projection orders"}
    deadline = time.monotonic() + 60
    letters = []
    while time.monotonic() < deadline:
        letters = read_dead_letters(settings.kafka.client_config(), dlq)
        if wanted <= {letter.stage for letter in letters}:
            break
        time.sleep(0.5)
    stages = {letter.stage for letter in letters}
    assert wanted <= stages
    for letter in letters:
        assert letter.source_topic == topic
        assert letter.partition == poison_partition
        assert letter.value in (
            b"\x00\xffnot an event",
            b'{"envelope": {"event_type": "OrderTeleported"}, "payload": {}}',
        )
    reasons = " | ".join(letter.error for letter in letters)
    assert "undecodable event" in reasons
    assert "unknown event type 'OrderTeleported'" in reasons
    offsets = {letter.offset for letter in letters}
    assert len(offsets) == 2

    # The read side skipped the poison and still holds both orders.
    system.wait_for(system.submit_many([PlaceOrder(order_id=f"{run}-last", customer_id="c", lines=line)])[0].events)
    rows = system.query("SELECT count() FROM orders FINAL WHERE order_id LIKE %(p)s", {"p": f"{run}-%"}).scalar()
    assert rows == 3

    # Redrive re-runs the stage that gave up; the bytes are poison still, so the message is parked
    # again with the new error, and nothing is appended to the event store.
    [result] = system.redrive(letters[:1])
    assert result.result == "parked again"
    assert _count_value(settings, topic, poison_partition, letters[0].value) == 1
    assert [r.result for r in system.redrive(letters[:1])] == ["skipped"]


def _count_value(settings, topic: str, partition: int, value: bytes | None) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    count = 0
    try:
        while True:
            msg = consumer.poll(5)
            if msg is None or (msg.error() and msg.error().code() == -191):  # _PARTITION_EOF
                return count
            count += msg.value() == value
    finally:
        consumer.close()

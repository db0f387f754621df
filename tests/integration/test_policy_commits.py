"""A policy runner commits the offsets of events that gave it nothing to do late, in one transaction:
with the next batch that produces a command or a dead letter, once `idle_commit_ms` has passed,
or when it stops. Most events a service reads give it nothing, and each commit is a transaction."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from choreography.config import Settings
from choreography.policy_runner import PolicyRunner
from choreography.system import runner_config
from choreography.topology import ensure_topics
from events.log.kafka_io import consumer_config
from tests.integration.workload import append_stock_added, poll_until

IDLE_COMMIT_MS = 5000


def committed(settings: Settings, group: str) -> int:
    """How many inventory events the group's committed offsets cover."""
    topic = settings.topic_name("inventory-events")
    consumer = Consumer(consumer_config(settings.kafka.client_config(), group))
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(settings.partitions("inventory"))], 10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def test_offsets_of_events_that_gave_nothing_commit_late_and_together(make_settings) -> None:
    settings = make_settings(shards=1, partitions=2)
    ensure_topics(settings)
    config = runner_config(settings, "payment", 0).model_copy(
        # the wiring dead-letters the StockAdded of a 'haunted' SKU, and gives nothing for the others
        update={
            "policies": "tests.integration.test_policy_targets:WIRING",
            "runners": 1,
            "idle_commit_ms": IDLE_COMMIT_MS,
        }
    )
    append_stock_added(settings, [f"plain-{i}" for i in range(20)])
    runner = PolicyRunner(config)
    try:
        poll_until(runner, 20, 30)
        assert runner.events == 20
        assert runner.transactions == 0, "no transaction for a batch that gave nothing"
        assert committed(settings, config.group_id) == 0

        deadline = time.monotonic() + IDLE_COMMIT_MS / 1000 + 10
        while runner.transactions == 0 and time.monotonic() < deadline:
            runner.poll()  # no new events: the offsets commit once they waited idle_commit_ms
        assert runner.transactions == 1
        assert committed(settings, config.group_id) == 20

        append_stock_added(settings, ["plain-x"])
        poll_until(runner, 21, 30)
        assert runner.transactions == 1
        append_stock_added(settings, ["haunted-1"])
        poll_until(runner, 22, 30)
        assert runner.dead_letters == 1
        assert runner.transactions == 2, "the dead letter commits at once, with the offsets before it"
        assert committed(settings, config.group_id) == 22

        append_stock_added(settings, ["plain-y"])
        poll_until(runner, 23, 30)
        assert runner.transactions == 2
    finally:
        runner.close()
    assert runner.transactions == 3, "stopping commits what was read"
    assert committed(settings, config.group_id) == 23

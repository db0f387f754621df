"""A consumer of Choreo starts at its group's last stable committed offsets: an offset commit left
pending by another transaction (after a broker crash, one the coordinator no longer knows) must
not stall it. librdkafka's own offset fetch waits for such commits to resolve, consuming nothing."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition

from choreography.policy_runner import PolicyRunner
from choreography.system import runner_config
from choreography.topology import ensure_topics
from events.log.kafka_io import consumer_config, producer_config
from tests.integration.workload import append_stock_added, poll_until


def test_a_policy_runner_consumes_although_a_stranger_holds_an_offset_commit_pending(make_settings) -> None:
    settings = make_settings(shards=1, partitions=2)
    ensure_topics(settings)
    config = runner_config(settings, "order", 0).model_copy(update={"runners": 1})
    skus = [f"sku-{i}" for i in range(6)]
    append_stock_added(settings, skus)

    # A transaction of another producer commits offsets for the runner's group, and stays open.
    kafka = settings.kafka.client_config()
    group_member = Consumer(consumer_config(kafka, config.group_id))
    stranger = Producer(producer_config(kafka, f"{settings.topic_prefix}stranger"))
    stranger.init_transactions(30)
    stranger.begin_transaction()
    stranger.send_offsets_to_transaction(
        [TopicPartition(settings.topic_name("inventory-events"), 0, 1)], group_member.consumer_group_metadata(), 30
    )
    try:
        runner = PolicyRunner(config)
        try:
            poll_until(runner, len(skus), 15)
            assert runner.events == len(skus), "the runner waited for the pending offset commit"
        finally:
            runner.close()
    finally:
        stranger.abort_transaction(30)
        group_member.close()

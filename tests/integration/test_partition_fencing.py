"""Fencing holds per partition under any change of shard count, an upgrade aborts transactions
left open under the old per-shard ids, two deployments never fence each other, and a topic whose
partition count differs from cluster.yaml stops the start with a clear error."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from actors.shard import Shard, ShardFenced
from choreography.config import ConfigError, Settings
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.log.kafka_io import producer_config
from events.log.topics import partition_for
from shop.messages import registry as shop_registry
from shop.messages.orders import OrderLine, PlaceOrder
from tests.integration.conftest import read_log

LINE = (OrderLine(sku="A", quantity=1, unit_price_cents=3),)


def _with_shards(settings: Settings, shards: int) -> Settings:
    services = dict(settings.services)
    services["order"] = services["order"].model_copy(update={"shards": shards})
    return settings.model_copy(update={"services": services})


def _shard(settings: Settings, index: int = 0) -> Shard:
    return Shard(shard_config(settings, "order", index), settings.aggregate("order"), shop_registry())


def _order_in(partition: int, partitions: int) -> PlaceOrder:
    while True:
        oid = uuid.uuid4().hex
        if partition_for(oid, partitions) == partition:
            return PlaceOrder(order_id=oid, customer_id="c", lines=LINE)


def test_a_shard_count_change_never_leaves_two_writers_on_a_partition(make_settings) -> None:
    settings = make_settings(shards=2, partitions=4)
    ensure_topics(settings)
    old = _shard(settings, index=1)  # owns partitions 1 and 3 with two shards
    assert old.handle([_order_in(1, 4)])[0].ok
    new = _shard(_with_shards(settings, 1), index=0)  # one shard now owns every partition
    with pytest.raises(ShardFenced):
        old.handle([_order_in(1, 4)])
    assert new.handle([_order_in(1, 4)])[0].ok
    assert len([e for e in read_log(settings, "order-events") if e.partition == 1]) == 2
    new.close()


def test_an_upgrade_aborts_transactions_left_open_under_the_old_ids(make_settings) -> None:
    settings = make_settings(shards=2, partitions=4)
    ensure_topics(settings)
    # A shard of the old scheme crashed mid-transaction: its transaction stays open for 10 minutes.
    stranded = Producer(
        {**producer_config(settings.kafka.client_config(), f"{settings.namespace}-order-shard-1"),
         "transaction.timeout.ms": 600_000}
    )  # fmt: skip
    stranded.init_transactions(30)
    stranded.begin_transaction()
    stranded.produce(settings.topic_name("order-events"), key=b"x", value=b"{}", partition=1)
    assert stranded.flush(10) == 0

    new = _shard(_with_shards(settings, 1))
    placed = new.handle([_order_in(1, 4)])[0]
    assert placed.ok
    visible = {e.aggregate_id for e in read_log(settings, "order-events", skip_undecodable=True)}
    assert placed.events[0].aggregate_id in visible, "a read_committed reader is held back by the stranded transaction"
    new.close()


def test_two_deployments_sharing_a_namespace_never_fence_each_other(make_settings) -> None:
    first = make_settings(shards=1, partitions=2)
    second = make_settings(shards=1, partitions=2).model_copy(update={"namespace": first.namespace})
    ensure_topics(first)
    ensure_topics(second)
    a = _shard(first)
    b = _shard(second)
    assert a.handle([_order_in(0, 2)])[0].ok
    assert b.handle([_order_in(0, 2)])[0].ok
    a.close()
    b.close()


def test_a_partition_count_mismatch_stops_the_start_with_a_clear_error(make_settings) -> None:
    settings = make_settings(shards=1, partitions=4)
    ensure_topics(settings)
    grown = settings.model_copy(
        update={
            "topics": [
                t.model_copy(update={"partitions": 8}) if t.name == "order-events" else t for t in settings.topics
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"order-events has 4 partitions.*cluster\.yaml.* 8"):
        ensure_topics(grown)

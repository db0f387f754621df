"""A batch for several partitions commits one transaction per partition, and the transactions are
completed together (their round trips overlap). A partition whose transaction fails is recovered
alone: an abortable failure is aborted and retried, and a fenced producer stops the shard only after
the other partitions' commits are applied."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from actors.shard import Shard, ShardFenced
from choreography.config import Settings
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.log.topics import partition_for
from shop.messages import registry as shop_registry
from shop.messages.orders import OrderLine, PlaceOrder
from tests.integration.conftest import read_log

LINE = (OrderLine(sku="A", quantity=1, unit_price_cents=3),)
PARTITIONS = 4


class FailingCommit:
    """A partition's producer whose next commit fails with `error`, its transaction left open (as
    a broker that answers a commit with an error leaves it); every other call goes to `producer`."""

    def __init__(self, producer: Producer, error: KafkaError) -> None:
        self.producer = producer
        self.error: KafkaError | None = error
        self.commit_threads: list[str] = []

    def commit_transaction(self, *args: Any) -> None:
        self.commit_threads.append(threading.current_thread().name)
        if self.error is not None:
            error, self.error = self.error, None
            raise KafkaException(error)
        self.producer.commit_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)


def _orders(per_partition: int) -> dict[int, list[PlaceOrder]]:
    run = uuid.uuid4().hex[:6]
    found: dict[int, list[PlaceOrder]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(orders) < per_partition for orders in found.values()):
        order_id = f"{run}-{i}"
        orders = found[partition_for(order_id, PARTITIONS)]
        if len(orders) < per_partition:
            orders.append(PlaceOrder(order_id=order_id, customer_id="c", lines=LINE))
        i += 1
    return found


def _shard(settings: Settings) -> Shard:
    return Shard(shard_config(settings, "order", 0), settings.aggregate("order"), shop_registry())


def _placed(settings: Settings) -> Counter[str]:
    """Events per order in the committed log."""
    return Counter(e.envelope.aggregate_id for e in read_log(settings, "order-events"))


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    settings: Settings = make_settings(shards=1, partitions=PARTITIONS)
    ensure_topics(settings)
    return settings


def test_an_aborted_partition_is_retried_alone_and_every_command_commits_once(settings: Settings) -> None:
    shard = _shard(settings)
    failing = FailingCommit(shard.producers[2], KafkaError(KafkaError._STATE, "injected", txn_requires_abort=True))
    shard.producers[2] = failing  # type: ignore[assignment]
    by_partition = _orders(per_partition=2)
    commands = [cmd for p in range(PARTITIONS) for cmd in by_partition[p]]
    commands = commands[::2] + commands[1::2]  # partitions interleaved, as clients send them

    outcomes = shard.handle(commands)

    assert [o.command_id for o in outcomes] == [c.command_id for c in commands]
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok]
    assert failing.commit_threads[0].startswith("transactions"), "completed beside the other partitions"
    assert len(failing.commit_threads) == 2, "the aborted transaction was retried once"
    assert shard.transactions == PARTITIONS, "one committed transaction per partition"
    assert all(shard.state(c.order_id)[1] == 1 for c in commands)
    shard.close()
    assert _placed(settings) == Counter({c.order_id: 1 for c in commands}), "the aborted attempt stays invisible"


def test_a_fenced_partition_stops_the_shard_after_the_others_are_applied(settings: Settings) -> None:
    shard = _shard(settings)
    failing = FailingCommit(shard.producers[1], KafkaError(KafkaError._FENCED, "injected", fatal=True))
    shard.producers[1] = failing  # type: ignore[assignment]
    by_partition = _orders(per_partition=1)
    commands = [by_partition[p][0] for p in range(PARTITIONS)]

    with pytest.raises(ShardFenced, match="fenced"):
        shard.handle(commands)

    lost = by_partition[1][0].order_id
    assert shard.state(lost)[1] == 0
    assert all(shard.state(c.order_id)[1] == 1 for c in commands if c.order_id != lost)
    shard.close()

    successor = _shard(settings)  # fences the old producers and aborts the open transaction
    assert all(successor.state(c.order_id)[1] == (0 if c.order_id == lost else 1) for c in commands)
    retried = successor.handle(commands)
    assert all(o.ok for o in retried)
    assert [o.duplicate for o in retried] == [c.order_id != lost for c in commands], "only the lost one decides anew"
    successor.close()
    assert _placed(settings) == Counter({c.order_id: 1 for c in commands})

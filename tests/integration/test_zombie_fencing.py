"""A zombie shard (an old instance still alive) cannot append once its successor has started."""

from __future__ import annotations

import uuid

import pytest
import ray

from actors.shard_actor import RemoteShardActor, spawn_shard
from choreography.errors import ShardUnavailable
from choreography.system import shard_config
from choreography.topology import ensure_topics
from events.log.topics import shard_for
from shop.messages.orders import OrderLine, PlaceOrder
from tests.integration.conftest import read_log


def test_successor_fences_the_zombie(make_settings, ray_runtime) -> None:
    settings = make_settings(shards=2, partitions=4)
    ensure_topics(settings)
    config = shard_config(settings, "order", 0)
    run = uuid.uuid4().hex[:6]
    ids = [f"{run}-{i}" for i in range(200) if shard_for(f"{run}-{i}", 2, 4) == 0]
    line = (OrderLine(sku="A", quantity=1, unit_price_cents=1),)

    # A true zombie is never restarted: Ray already runs its replacement.
    zombie = RemoteShardActor.options(name=f"zombie-{run}", num_cpus=0, max_restarts=0).remote(config)
    first = ray.get(zombie.handle.remote([PlaceOrder(order_id=ids[0], customer_id="c", lines=line)]))
    assert first[0].ok

    successor = spawn_shard(config, name=f"successor-{run}")
    assert ray.get(successor.ready.remote())["aggregates"] == 1  # it rehydrated the zombie's write

    late = PlaceOrder(order_id=ids[1], customer_id="c", lines=line)
    with pytest.raises(ShardUnavailable, match="fenced"):
        ray.get(zombie.handle.remote([late]))

    ok = ray.get(successor.handle.remote([PlaceOrder(order_id=ids[2], customer_id="c", lines=line)]))
    assert ok[0].ok

    log = read_log(settings, "order-events")
    assert {e.aggregate_id for e in log} == {ids[0], ids[2]}
    assert late.command_id not in {e.envelope.causation_id for e in log}
    for actor in (zombie, successor):
        ray.kill(actor, no_restart=True)

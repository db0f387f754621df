"""Snapshots shorten rehydration and never change its result, whether a shard restarts on a new
node (from the snapshot topic) or where it ran (from its local aggregate store); a corrupt
snapshot (runbook Case 2) is ignored and that partition replays from the start."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from actors.shard import Shard
from choreography.system import shard_config
from choreography.topology import ensure_topics
from shop.messages import registry as shop_registry
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder


def _shard(settings, node: str = "") -> Shard:
    """A shard of partition 0 and 1, on the node whose local state dir is `node` (the default one
    if empty): a new node has no aggregate store yet."""
    config = shard_config(settings, "order", 0)
    if node:
        config = config.model_copy(update={"state_dir": f"{config.state_dir}-{node}"})
    return Shard(config, settings.aggregate("order"), shop_registry())


def _all(shard: Shard) -> dict[str, tuple[object, int]]:
    return {k: (e.state, e.version) for k, e in shard.all_entries().items()}


def test_rehydration_from_snapshots_equals_full_replay_and_survives_corruption(make_settings) -> None:
    settings = make_settings(shards=1, partitions=2, snapshot_every=50)
    ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    line = (OrderLine(sku="A", quantity=1, unit_price_cents=3),)
    first = _shard(settings)
    first.handle([PlaceOrder(order_id=f"{run}-{i}", customer_id="c", lines=line) for i in range(300)])
    cancels = [CancelOrder(order_id=f"{run}-{i}") for i in range(0, 300, 4)]
    first.handle(cancels)
    first.handle([PlaceOrder(order_id=f"{run}-tail-{i}", customer_id="c", lines=line) for i in range(7)])
    expected = _all(first)
    first.close()

    snapshot_based = _shard(settings, node="new")
    stats = snapshot_based.stats
    assert stats.snapshots > 0 and set(stats.from_checkpoint) == {0, 1}
    assert stats.events < 375, "the checkpoint should have spared most of the replay"
    assert _all(snapshot_based) == expected
    # Idempotency survives the snapshot: a command applied before it is recognised, not re-applied.
    again = snapshot_based.handle([cancels[0]])
    assert again[0].ok and again[0].duplicate
    assert snapshot_based.state(f"{run}-0")[1] == expected[f"{run}-0"][1]
    snapshot_based.close()

    local = _shard(settings)
    assert local.stats.snapshots == 0, "its aggregate store already held every snapshot"
    assert set(local.stats.from_checkpoint) == {0, 1} and local.stats.events < 375
    assert _all(local) == expected
    local.close()

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(settings.topic_name("order-snapshots"), key=f"{run}-1".encode(), value=b"\x00garbage", partition=0)
    assert producer.flush(10) == 0

    recovered = _shard(settings, node="new")
    assert 0 not in recovered.stats.from_checkpoint, "a corrupt partition must replay from zero"
    assert 1 in recovered.stats.from_checkpoint
    assert _all(recovered) == expected
    recovered.close()

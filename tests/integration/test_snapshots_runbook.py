"""The snapshot runbook against real Kafka and Ray: status reports the snapshots, drop makes a
shard replay its partition from offset 0 into the same state, rebuild writes a fresh checkpoint
at the end of the log that the next restart uses."""

from __future__ import annotations

from collections import Counter

import ray

from choreography import snapshots
from shop.messages import OrderLine, PlaceOrder
from tests.integration.conftest import read_log


def _orders(prefix: str, n: int) -> list[PlaceOrder]:
    return [
        PlaceOrder(
            order_id=f"{prefix}-{i}",
            customer_id=f"c-{i % 3}",
            lines=(OrderLine(sku=f"SKU-{i % 4}", quantity=1 + i % 3, unit_price_cents=250),),
        )
        for i in range(n)
    ]


def test_status_drop_and_rebuild(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=4, snapshot_every=5)
    system = start_system(settings, policies=False, projections=False, metrics=False)
    shards = system.shards["order"]
    system.submit_many(_orders("snap", 40))
    ray.get([s.snapshot_now.remote() for s in shards])
    system.submit_many(_orders("tail", 12))  # events after the checkpoints: a tail to replay

    rows = {r.partition: r for r in snapshots.status(settings, "order")}
    log = read_log(settings, "order-events")
    per_partition = Counter(e.partition for e in log)
    assert sorted(rows) == [0, 1, 2, 3]
    for p, r in rows.items():
        assert r.shard == p % 2 and not r.corrupt
        assert r.checkpoint is not None and 0 < r.checkpoint <= r.events_end, r
        assert r.records > 0 and r.bytes > 0 and r.age_s() is not None
        assert r.events_end >= per_partition[p]
    assert sum(r.records for r in rows.values()) >= 40
    assert sum(r.tail for r in rows.values()) >= 12
    as_json = rows[1].as_dict()
    assert as_json["replay_from"] == rows[1].checkpoint and as_json["tail"] == rows[1].tail

    # drop partition 1 (owned by shard 1, with partition 3): it replays from 0, partition 3 does not.
    before = ray.get(shards[1].dump.remote())
    reset = snapshots.drop(settings, "order", [1])
    assert reset == {1: rows[1].records}
    after_drop = {r.partition: r for r in snapshots.status(settings, "order")}
    assert after_drop[1].checkpoint == 0 and after_drop[1].replay_from == 0
    assert after_drop[3].checkpoint == rows[3].checkpoint
    infos = snapshots.restart_shards(snapshots.running_shards(settings, "order", [1]))
    tail_3 = sum(1 for e in log if e.partition == 3 and e.offset >= rows[3].checkpoint)
    assert infos[1]["rehydrated_events"] == per_partition[1] + tail_3
    assert ray.get(shards[1].dump.remote()) == before
    assert ray.get(shards[0].dump.remote())  # the other shard was not touched

    # rebuild partition 1: a complete snapshot at the end of its log, used by the next restart.
    rebuilt = {r.partition: r for r in snapshots.rebuild(settings, "order", [1])}
    next_offsets = ray.get(shards[1].info.remote())["next_offsets"]
    assert rebuilt[1].checkpoint == next_offsets[1]
    assert rebuilt[1].events_end - rebuilt[1].checkpoint <= 1  # at most the trailing commit marker
    assert rebuilt[1].records == len({e.aggregate_id for e in log if e.partition == 1})
    infos = snapshots.restart_shards(snapshots.running_shards(settings, "order", [1]))
    assert infos[1]["rehydrated_events"] == 0
    assert ray.get(shards[1].dump.remote()) == before
    accepted = system.submit_many(_orders("after", 8))
    assert all(o.ok for o in accepted)

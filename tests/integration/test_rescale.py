"""Rescaling edge cases on a real broker and Ray: a rescale cut short mid-move is completed by the
next one, a shard that Ray restarts takes the partitions the map gives it now, and bad counts and
unknown services are refused with a clear error."""

from __future__ import annotations

import time

import pytest
import ray

from actors.outcomes import ShardUnavailable
from events.log.topics import partition_for
from shop.messages import AddStock


def sku_in(partition: int, partitions: int) -> str:
    return next(f"SKU-{i}" for i in range(10_000) if partition_for(f"SKU-{i}", partitions) == partition)


def test_a_rescale_cut_short_mid_move_is_completed_by_the_next(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=4)
    inventory = settings.services["inventory"].model_copy(update={"shards": 2})
    settings = settings.model_copy(update={"services": {**settings.services, "inventory": inventory}})
    system = start_system(settings, metrics=False, policies=False, projections=False)
    sku = sku_in(1, 4)
    system.submit(AddStock(sku=sku, quantity=5))
    # The driver of a rescale died between releasing partition 1 and its adoption by shard 0.
    owners = system.refresh_routes()["inventory"].moved(1, 0)
    system.owners_log.write("inventory", owners)
    ray.get(system.shards["inventory"][1].release.remote(1))
    with pytest.raises(ShardUnavailable, match="found no shard serving"):
        system.submit_many([AddStock(sku=sku, quantity=1)], timeout=2)

    report = system.scale("inventory", 2)
    assert [(m.partition, m.source, m.target) for m in report.moves] == [(1, 0, 1)], "back where round-robin puts it"
    assert [ray.get(a.info.remote())["partitions"] for a in system.shards["inventory"]] == [[0, 2], [1, 3]]
    system.submit(AddStock(sku=sku, quantity=1, command_id="after"))
    state, version = system.state("inventory", sku)
    assert (state.added, version) == (6, 2), "the resubmit that timed out was never decided"


def test_a_restarted_shard_serves_what_the_map_says_and_bad_counts_are_refused(make_settings, start_system) -> None:
    settings = make_settings(shards=2, partitions=4)
    system = start_system(settings, metrics=False, policies=False, projections=False)
    system.scale("order", 3)
    victim = system.shards["order"][0]
    pid = ray.get(victim.info.remote())["pid"]
    ray.kill(victim, no_restart=False)  # Ray restarts it with its first config (2 shards, round-robin)
    deadline = time.monotonic() + 120
    while (info := ray.get(victim.ready.remote()))["pid"] == pid:
        assert time.monotonic() < deadline, "Ray did not restart the shard"
        time.sleep(0.5)
    assert info["partitions"] == [0, 3], "partitions from the map, not from its config"
    with pytest.raises(ValueError, match="1 to 4 shards"):
        system.scale("order", 5)
    with pytest.raises(ValueError, match="unknown service 'nowhere'"):
        system.scale("nowhere", 2)

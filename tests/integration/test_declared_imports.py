"""A shard imports its declared code before it serves its first call."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import ray

from actors.shard_actor import RemoteShardActor
from choreography.system import shard_config
from choreography.topology import ensure_topics

DOMAIN = "tests.integration.slow_domain"


def _imported(_actor: Any) -> dict[str, bool]:
    """Which of the slow domain's modules are fully imported in the calling process."""
    names = (DOMAIN, f"{DOMAIN}.aggregate", f"{DOMAIN}.messages")
    return {n: n in sys.modules and not getattr(sys.modules[n].__spec__, "_initializing", False) for n in names}


def test_the_declared_code_is_imported_before_the_first_call(make_settings, ray_runtime) -> None:
    """A call's arguments import their classes' modules as they unpickle. Had the shard's start-up
    thread been importing the same package then, the two threads could deadlock on the module
    locks (Python raises _DeadlockError in one of them, and a call failed so in CI)."""
    from tests.integration.slow_domain import Restock

    settings = make_settings(shards=1, partitions=2)
    ensure_topics(settings)
    config = shard_config(settings, "inventory", 0).model_copy(
        update={"aggregate": f"{DOMAIN}.aggregate:InventoryAggregate", "messages": f"{DOMAIN}.messages:MESSAGES"}
    )
    shard = RemoteShardActor.options(name=f"slow-{uuid.uuid4().hex[:6]}", num_cpus=0, max_restarts=0).remote(config)
    try:
        assert ray.get(shard.__ray_call__.remote(_imported)) == dict.fromkeys(_imported(None), True)
        outcomes = ray.get(shard.handle.remote([Restock(sku="S-1", quantity=3)]), timeout=120)
        assert [o.ok for o in outcomes] == [True]
    finally:
        ray.kill(shard, no_restart=True)

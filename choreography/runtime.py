"""Process tuning shared by Choreo's long-running actors."""

from __future__ import annotations

import gc
from typing import Any


def tune_gc() -> None:
    """Make the cyclic garbage collector rare. Hot paths allocate tens of thousands of small,
    acyclic objects per batch (decoded events, rows), which reference counting frees; with the
    default thresholds the collector rescans them over and over and halves throughput."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def actor_options(name: str, namespace: str, detached: bool, **extra: Any) -> dict[str, Any]:
    """Ray options shared by Choreo's actors: named (one per role), I/O bound so they reserve no
    CPU, restarted by Ray after a crash, and detached when the deployment should outlive its driver."""
    return {
        "name": name,
        "namespace": namespace,
        "get_if_exists": True,
        "lifetime": "detached" if detached else None,
        "num_cpus": 0,
        "max_restarts": -1,
        **extra,
    }

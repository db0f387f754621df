"""Process tuning shared by Choreo's long-running actors."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Make the cyclic garbage collector rare. Hot paths allocate tens of thousands of small,
    acyclic objects per batch (decoded events, rows), which reference counting frees; with the
    default thresholds the collector rescans them over and over and halves throughput."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)

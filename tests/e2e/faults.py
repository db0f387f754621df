"""Fault helpers of the e2e tests: a broker killed like a crash, and free ports for private brokers."""

from __future__ import annotations

import os
import signal
import time

from choreography.broker import LocalBroker, free_ports

__all__ = ["free_ports", "sigkill"]


def sigkill(broker: LocalBroker) -> None:
    """Kill the broker's process (SIGKILL: no clean shutdown) and wait until its port is closed."""
    pid = broker.status().pid
    assert pid is not None, f"no broker runs on port {broker.port}"
    os.kill(pid, signal.SIGKILL)
    broker.pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while broker.status().running and time.monotonic() < deadline:
        time.sleep(0.1)

"""The watchdog that bounds client calls whose own timeout does not hold."""

from __future__ import annotations

import threading
import time

from actors.runtime import Watchdog


def test_a_call_blocked_past_its_timeout_and_margin_is_reported_once() -> None:
    stuck: list[str] = []
    reported = threading.Event()
    dog = Watchdog(lambda what: (stuck.append(what), reported.set()), margin_s=0.1, period_s=0.02)
    with dog.bound("send_offsets_to_transaction of p0", 0.1):
        assert reported.wait(2), "the blocked call was never reported"
    time.sleep(0.1)
    assert stuck == ["send_offsets_to_transaction of p0 is still blocked 0.1s past its own timeout"]


def test_calls_that_return_in_time_are_never_reported() -> None:
    stuck: list[str] = []
    dog = Watchdog(stuck.append, margin_s=0.05, period_s=0.01)
    for _ in range(20):
        with dog.bound("commit_transaction", 0.05):
            time.sleep(0.005)
    time.sleep(0.2)
    assert stuck == [] and dog.armed == {}


def test_a_watchdog_without_an_action_watches_nothing() -> None:
    dog = Watchdog()
    with dog.bound("flush", 0):
        time.sleep(0.01)
    assert dog.armed == {}

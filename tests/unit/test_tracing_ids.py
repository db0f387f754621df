"""Trace ids, head sampling and the W3C traceparent header (events/tracing.py)."""

from __future__ import annotations

import random

from events.tracing import parse_traceparent, sampled, trace_id, traceparent


def test_a_sagas_trace_id_is_32_hex_digits_and_stable() -> None:
    assert trace_id("order-1") == trace_id("order-1") != trace_id("order-2")
    assert len(trace_id("order-1")) == 32 and int(trace_id("order-1"), 16) > 0


def test_sampling_picks_about_the_ratio_and_always_the_same_sagas() -> None:
    ids = [f"order-{i}" for i in range(20_000)]
    picked = [i for i in ids if sampled(i, 0.01)]
    assert 140 <= len(picked) <= 260
    assert picked == [i for i in ids if sampled(i, 0.01)]
    assert set(picked) <= {i for i in ids if sampled(i, 0.1)}, "a higher ratio keeps every saga a lower one picked"
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


def test_a_traceparent_reads_back_as_written() -> None:
    rng = random.Random(13)
    for n in range(500):
        saga, span = f"saga-{n}-{rng.random()}", f"{rng.randrange(1, 1 << 64):016x}"
        assert parse_traceparent(traceparent(trace_id(saga), span)) == (trace_id(saga), span)


def test_an_unsampled_malformed_or_missing_traceparent_has_no_parent() -> None:
    good = traceparent("ab" * 16, "cd" * 8).decode()
    assert parse_traceparent(good) == ("ab" * 16, "cd" * 8)
    for bad in (None, "", "garbage", good[:-2] + "00", good.replace("ab", "zz"), "00-" + "0" * 32 + "-" + "cd" * 8 + "-01",
                "ff" + good[2:], good.replace("-cd", "-")):  # fmt: skip
        assert parse_traceparent(bad) is None, bad

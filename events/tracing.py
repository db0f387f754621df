"""Trace ids and the head-sampling decision of a saga, shared by derived traces
(`choreography.traces`) and live spans (`actors.live_spans`). Pure: no SDK, no Kafka.

A saga's trace id is a hash of its id, so its derived spans, its live spans and every later
client command of the same saga land in one trace. Whether live spans trace a saga is decided
from that id too (like OpenTelemetry's TraceIdRatioBased sampler): the same answer at its first
command and at any later one, on any process."""

from __future__ import annotations

import hashlib

TRACEPARENT = "traceparent"
"""The W3C Trace Context header, carried on the Kafka records of a sampled saga."""


def trace_id(saga_id: str) -> str:
    """The W3C trace id (32 hex digits) of a saga."""
    return hashlib.sha256(f"saga|{saga_id}".encode()).hexdigest()[:32]


def sampled(saga_id: str, ratio: float) -> bool:
    """Whether live spans trace the saga: about `ratio` of all sagas, always the same ones."""
    if ratio <= 0:
        return False
    return ratio >= 1 or int(trace_id(saga_id)[16:], 16) < ratio * (1 << 64)


def traceparent(trace: str, span: str) -> bytes:
    """The header value of a sampled span (version 00, flags 01)."""
    return f"00-{trace}-{span}-01".encode()


def parse_traceparent(value: bytes | str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a sampled `traceparent`; None if absent, malformed or unsampled."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    parts = text.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        int(parts[1], 16), int(parts[2], 16)
        flags = int(parts[3][:2], 16)
    except ValueError:
        return None
    if not flags & 1 or set(parts[1]) == {"0"} or set(parts[2]) == {"0"}:
        return None
    return parts[1], parts[2]

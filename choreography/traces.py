"""Derived traces: OpenTelemetry-shaped spans built from a saga's events alone, after the fact.

The log holds the causal chain already. Every event carries its saga (correlation id), the
command that made it (causation id), when that command was decided (`occurred_at`), and, as its
Kafka timestamp, when the shard took the command (`StoredEvent.timestamp_ms`). A policy's command
ids derive from the event it reacts to (`<event id>:<n>`, see `choreography.policies`), and a
service's policies make only that service's commands. So, with the declared wiring:

- one span per command handled: the events one command of one service made, from the shard
  taking the command to its decision ("processing");
- one span per policy reaction: from the decision that made the cause to the shard of the
  reacting service taking the command ("waiting": both transactions' commits, the trip through
  Kafka twice, and the policy itself, which takes microseconds);
- each span's parent is its cause. A command from outside the saga (the client's first command, a
  deadline firing, a later client command) hangs under the previous command span of the same
  aggregate, or under the saga's first one: every saga is one tree, across services and restarts,
  and the write path pays nothing for it. A policy's command whose cause is missing from the
  events given starts a root of its own, so a broken chain shows (`Trace.connected`).

Ids are deterministic (hashes of the saga id and of the command or reaction), so building a trace
twice gives the same spans. Pure: the events come in, the spans go out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from choreography.policies import On, reactions
from events.base import StoredEvent
from events.tracing import trace_id

HEX = frozenset("0123456789abcdef")


def _span_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    """"" for the saga's root span."""
    name: str
    service: str
    kind: str
    """"SERVER" (a command handled), "CONSUMER" (a policy reaction)."""
    start: datetime
    end: datetime
    attributes: dict[str, str] = field(default_factory=dict)
    events: list[tuple[datetime, str, dict[str, str]]] = field(default_factory=list)
    """(time, name, attributes): the events a command appended."""
    children: list[Span] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) / timedelta(milliseconds=1)


@dataclass
class Trace:
    saga_id: str
    trace_id: str
    roots: list[Span]
    """One when the saga is a connected tree (always, unless it has no events)."""
    spans: list[Span]
    """Every span, parents before their children."""

    @property
    def connected(self) -> bool:
        return len(self.roots) == 1

    def hops(self) -> list[tuple[Span, Span]]:
        """(reaction, command) pairs: each hop of the saga between services, in time order."""
        return sorted(
            ((s, c) for s in self.spans if s.kind == "CONSUMER" for c in s.children),
            key=lambda pair: pair[1].start,
        )


def _taken_at(event: StoredEvent) -> datetime:
    """When the shard took the command that made `event` (its decision time if not recorded)."""
    if event.timestamp_ms <= 0:
        return event.envelope.occurred_at
    return min(datetime.fromtimestamp(event.timestamp_ms / 1000, UTC), event.envelope.occurred_at)


def _is_policy_command(command_id: str) -> bool:
    """A policy's command id is `<event id>:<n>`, an event id 32 hex digits (`events.base.new_id`)."""
    head, sep, n = command_id.rpartition(":")
    return bool(sep and n.isdigit() and len(head) == 32 and all(c in HEX for c in head))


def _cause_of(command_id: str, by_id: Mapping[str, StoredEvent]) -> StoredEvent | None:
    """The event a policy's command reacts to: its id is `<event id>:<n>`."""
    head, sep, n = command_id.rpartition(":")
    return by_id.get(head) if sep and n.isdigit() else None


def build_trace(saga_id: str, events: Sequence[StoredEvent], wiring: Mapping[str, Sequence[On]]) -> Trace:
    """The saga's spans from its events (any order) and every service's wiring."""
    tid = trace_id(saga_id)
    ordered = sorted(events, key=lambda e: (e.envelope.occurred_at, e.topic, e.partition, e.offset))
    by_id = {e.envelope.event_id: e for e in ordered}
    handled: dict[tuple[str, str], list[StoredEvent]] = {}
    for event in ordered:
        handled.setdefault((event.envelope.aggregate_type, event.envelope.causation_id), []).append(event)
    commands = {key: _command_span(tid, key, made) for key, made in handled.items()}
    reaction_spans: dict[tuple[str, str, str], Span] = {}
    spans: list[Span] = []
    roots: list[Span] = []
    last_on: dict[tuple[str, str], Span] = {}
    """The latest command span of each aggregate, for commands from outside the saga."""
    for (service, command_id), span in commands.items():
        first = handled[(service, command_id)][0]
        cause = _cause_of(command_id, by_id)
        parent: Span | None = None
        if cause is not None:
            policy, kind = _made_by(service, command_id, cause, wiring)
            span.name = f"{service} {kind}"
            key = (cause.envelope.event_id, service, policy)
            parent = reaction_spans.get(key)
            if parent is None:
                parent = reaction_spans[key] = Span(
                    tid, _span_id(tid, "reaction", *key), "", f"{service} {policy} on {cause.envelope.event_type}",
                    service, "CONSUMER", cause.envelope.occurred_at, span.start,
                    attributes={"choreo.policy": policy, "choreo.cause_event_id": cause.envelope.event_id},
                )  # fmt: skip
                _adopt(commands.get((cause.envelope.aggregate_type, cause.envelope.causation_id)), parent, roots)
                spans.append(parent)
            parent.end = max(parent.end, span.start)
            span.attributes["choreo.waiting_ms"] = f"{(span.start - parent.start) / timedelta(milliseconds=1):.1f}"
        elif _is_policy_command(command_id):
            missing = command_id.rpartition(":")[0]
            span.attributes["choreo.cause"] = f"missing: event {missing} is not among the saga's events"
        else:
            span.attributes["choreo.cause"] = "outside the saga: a client's command or a deadline"
            parent = last_on.get((service, first.envelope.aggregate_id)) or (roots[0] if roots else None)
        _adopt(parent, span, roots)
        last_on[(service, first.envelope.aggregate_id)] = span
        spans.append(span)
    for reaction in reaction_spans.values():
        reaction.attributes["choreo.waiting_ms"] = f"{reaction.duration_ms:.1f}"
    return Trace(saga_id, tid, roots, spans)


def _command_span(tid: str, key: tuple[str, str], made: list[StoredEvent]) -> Span:
    """The span of one command handled: `made`, the events it appended, in order."""
    service, command_id = key
    first = made[0]
    span = Span(
        tid, _span_id(tid, "command", service, command_id), "",
        f"{service} {' '.join(dict.fromkeys(e.envelope.event_type for e in made))}",
        service, "SERVER", _taken_at(first), first.envelope.occurred_at,
        attributes={"choreo.command_id": command_id, "choreo.aggregate_id": first.envelope.aggregate_id},
        events=[
            (e.envelope.occurred_at, e.envelope.event_type,
             {"choreo.event_id": e.envelope.event_id, "choreo.version": str(e.envelope.version),
              "choreo.position": f"{e.topic}[{e.partition}]@{e.offset}"})
            for e in made
        ],
    )  # fmt: skip
    span.attributes["choreo.processing_ms"] = f"{span.duration_ms:.1f}"
    return span


def _adopt(parent: Span | None, child: Span, roots: list[Span]) -> None:
    if parent is None:
        roots.append(child)
    else:
        child.parent_span_id = parent.span_id
        parent.children.append(child)


def _made_by(service: str, command_id: str, cause: StoredEvent, wiring: Mapping[str, Sequence[On]]) -> tuple[str, str]:
    """(policy name, command type) of `service`'s policy that made `command_id` from `cause`; the
    policy is "?" when today's wiring no longer makes that command."""
    for made in reactions(wiring.get(service, ()), cause):
        for command in made.commands:
            if command.command_id == command_id and command.target == service:
                return made.policy, type(command).__name__
    return "?", "command"


def render_tree(trace: Trace) -> list[str]:
    """The span tree as text lines: each span with its start (from the saga's first command), and
    the waiting (in Kafka) of each reaction and the processing of each command."""
    if not trace.spans:
        return [f"saga {trace.saga_id}: no events"]
    t0 = min(s.start for s in trace.spans)
    end = max(s.end for s in trace.spans)
    commands = sum(s.kind == "SERVER" for s in trace.spans)
    lines = [
        f"saga {trace.saga_id}  trace {trace.trace_id}",
        f"{commands} commands, {len(trace.spans) - commands} policy reactions, "
        f"{(end - t0) / timedelta(milliseconds=1):,.0f} ms from the first command to the last decision"
        + ("" if trace.connected else f"; NOT CONNECTED: {len(trace.roots)} roots"),
    ]

    def walk(span: Span, prefix: str, last: bool, top: bool) -> None:
        at = (span.start - t0) / timedelta(milliseconds=1)
        if span.kind == "CONSUMER":
            timing = f"waiting {span.duration_ms:,.0f} ms"
            made = ""
        else:
            timing = f"processing {span.duration_ms:,.0f} ms"
            made = " -> " + ", ".join(name for _, name, _ in span.events)
        branch = "" if top else ("└─ " if last else "├─ ")
        lines.append(f"{at:>8,.0f} ms  {prefix}{branch}{span.name}{made}  [{timing}]")
        inner = prefix if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(span.children):
            walk(child, inner, i == len(span.children) - 1, False)

    for root in trace.roots:
        walk(root, "", True, True)
    return lines


def span_json(span: Span) -> dict[str, object]:
    """A span as a JSON-able dict with the OpenTelemetry fields (times in ns since the epoch)."""
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "service": span.service,
        "kind": span.kind,
        "start_ns": _ns(span.start),
        "end_ns": _ns(span.end),
        "duration_ms": round(span.duration_ms, 3),
        "attributes": span.attributes,
        "events": [{"time_ns": _ns(at), "name": name, "attributes": attrs} for at, name, attrs in span.events],
    }


def _ns(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000) * 1000

"""The transfer choreography's invariants, checked from the event log alone."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from events import StoredEvent
from transfers.messages import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    DebitRefunded,
    TransferCompleted,
    TransferExpired,
    TransferFailed,
    TransferRejected,
    TransferRequested,
)


def audit(events: Iterable[StoredEvent], transfer_ids: Iterable[str]) -> tuple[list[str], Counter[str]]:
    """Violations (empty when every invariant holds) and the transfers' outcomes:

    * unique event ids, gap-free versions per aggregate;
    * each requested transfer ends exactly once;
    * money is conserved: the accounts hold exactly what they were opened with;
    * no balance ever goes negative;
    * a completed transfer moved its amount once, debit and credit; any other outcome moved
      nothing net (a debit, if any, was refunded exactly once)."""
    violations: list[str] = []
    seen: set[str] = set()
    streams: dict[tuple[str, str], list[StoredEvent]] = defaultdict(list)
    for ev in events:
        if ev.envelope.event_id in seen:
            violations.append(f"duplicate event id {ev.envelope.event_id}")
        seen.add(ev.envelope.event_id)
        streams[(ev.envelope.aggregate_type, ev.aggregate_id)].append(ev)
    opened = held = 0
    debited: Counter[str] = Counter()
    credited: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    ends: dict[str, list[str]] = defaultdict(list)
    requested: dict[str, int] = {}
    for (kind, agg_id), evs in streams.items():
        evs.sort(key=lambda e: e.version)
        if [e.version for e in evs] != list(range(1, len(evs) + 1)):
            violations.append(f"{kind} {agg_id}: versions not gap-free")
        balance = 0
        for ev in evs:
            match ev.payload:
                case AccountOpened(balance_cents=cents):
                    opened += cents
                    balance = cents
                case AccountDebited(transfer_id=tid, amount_cents=cents):
                    debited[tid] += cents
                    balance -= cents
                case AccountCredited(transfer_id=tid, amount_cents=cents):
                    credited[tid] += cents
                    balance += cents
                case DebitRefunded(transfer_id=tid, amount_cents=cents):
                    refunded[tid] += cents
                    balance += cents
                case TransferRequested(transfer_id=tid, amount_cents=cents):
                    requested[tid] = cents
                case TransferCompleted() | TransferRejected() | TransferFailed() | TransferExpired():
                    ends[agg_id].append(type(ev.payload).__name__)
            if balance < 0:
                violations.append(f"account {agg_id} went negative at version {ev.version}")
        if kind == "account":
            held += balance
    if held != opened:
        violations.append(f"money not conserved: accounts were opened with {opened}, hold {held}")
    outcomes: Counter[str] = Counter()
    for tid in transfer_ids:
        if tid not in requested:
            violations.append(f"transfer {tid} was never requested")
            continue
        if len(ends[tid]) != 1:
            violations.append(f"transfer {tid} ended {len(ends[tid])} times: {ends[tid]}")
            continue
        outcome = ends[tid][0]
        outcomes[outcome] += 1
        amount = requested[tid]
        moved = (debited[tid], credited[tid], refunded[tid])
        expected = (amount, amount, 0) if outcome == "TransferCompleted" else (debited[tid], 0, debited[tid])
        if moved != expected or debited[tid] not in (0, amount):
            violations.append(f"transfer {tid} ({outcome}) moved debit/credit/refund {moved}, expected {expected}")
    return violations[:50], outcomes

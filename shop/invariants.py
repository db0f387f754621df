"""Audits of the reference domain's invariants, computed from the event log alone."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from events.base import StoredEvent
from shop.messages.inventory import StockAdded, StockReleased, StockReserved, StockShipped
from shop.messages.orders import TERMINAL_EVENTS, OrderPlaced
from shop.messages.payment import PaymentCaptured, PaymentRefunded


@dataclass
class InvariantReport:
    orders: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    captured_cents: int = 0
    refunded_cents: int = 0
    confirmed_cents: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, message: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(message)


def audit(
    events: Iterable[StoredEvent],
    order_ids: Iterable[str] | None = None,
    skus: Iterable[str] | None = None,
) -> InvariantReport:
    """Check every invariant: one terminal state per order, stock never negative and conserved,
    money captured - refunded = confirmed totals, unique event ids, gap-free versions.

    `order_ids` and `skus` scope the audit to one run's orders and stock on a shared log."""
    result = InvariantReport()
    order_scope = set(order_ids) if order_ids is not None else None
    sku_scope = set(skus) if skus is not None else None
    by_aggregate: dict[tuple[str, str], list[StoredEvent]] = defaultdict(list)
    seen_ids: set[str] = set()
    for ev in events:
        if ev.envelope.event_id in seen_ids:
            result.fail(f"duplicate event id {ev.envelope.event_id}")
        seen_ids.add(ev.envelope.event_id)
        by_aggregate[(ev.envelope.aggregate_type, ev.aggregate_id)].append(ev)

    placed: dict[str, OrderPlaced] = {}
    terminal: dict[str, list[str]] = defaultdict(list)
    for (kind, agg_id), evs in by_aggregate.items():
        evs.sort(key=lambda e: e.version)
        versions = [e.version for e in evs]
        if versions != list(range(1, len(evs) + 1)):
            result.fail(f"version gap in {kind} {agg_id}: {versions[:10]}...")
        if kind == "order":
            for e in evs:
                if isinstance(e.payload, OrderPlaced):
                    placed[agg_id] = e.payload
                if isinstance(e.payload, TERMINAL_EVENTS):
                    terminal[agg_id].append(e.envelope.event_type)
        elif kind == "inventory" and (sku_scope is None or agg_id in sku_scope):
            _audit_stock(agg_id, evs, result)
        elif kind == "payment" and (order_scope is None or agg_id in order_scope):
            for e in evs:
                if isinstance(e.payload, PaymentCaptured):
                    result.captured_cents += e.payload.amount_cents
                elif isinstance(e.payload, PaymentRefunded):
                    result.refunded_cents += e.payload.amount_cents

    expected = order_scope if order_scope is not None else set(placed)
    result.orders = len(expected)
    for oid in expected:
        ends = terminal.get(oid, [])
        if len(ends) != 1:
            result.fail(f"order {oid} has {len(ends)} terminal events: {ends}")
            continue
        result.outcomes[ends[0]] += 1
        if ends[0] == "OrderConfirmed":
            result.confirmed_cents += placed[oid].total_cents
    if result.captured_cents - result.refunded_cents != result.confirmed_cents:
        result.fail(
            f"money: captured {result.captured_cents} - refunded {result.refunded_cents} "
            f"!= confirmed {result.confirmed_cents}"
        )
    _audit_shipped_lines(by_aggregate, placed, terminal, result, sku_scope)
    return result


def _audit_stock(sku: str, evs: list[StoredEvent], result: InvariantReport) -> None:
    added = available = reserved = shipped = 0
    for e in evs:
        p = e.payload
        if isinstance(p, StockAdded):
            added += p.quantity
            available += p.quantity
        elif isinstance(p, StockReserved):
            available -= p.quantity
            reserved += p.quantity
        elif isinstance(p, StockReleased):
            available += p.quantity
            reserved -= p.quantity
        elif isinstance(p, StockShipped):
            reserved -= p.quantity
            shipped += p.quantity
        if available < 0 or reserved < 0:
            result.fail(f"{sku}: negative stock at v{e.version} (available {available}, reserved {reserved})")
    if available + reserved + shipped != added:
        result.fail(f"{sku}: {available} + {reserved} + {shipped} != added {added}")
    if reserved != 0:
        result.fail(f"{sku}: {reserved} units still reserved after every order ended")


def _audit_shipped_lines(
    by_aggregate: dict[tuple[str, str], list[StoredEvent]],
    placed: dict[str, OrderPlaced],
    terminal: dict[str, list[str]],
    result: InvariantReport,
    sku_scope: set[str] | None,
) -> None:
    want: Counter[str] = Counter()
    for oid, ends in terminal.items():
        if ends == ["OrderConfirmed"] and oid in placed:
            for line in placed[oid].lines:
                if sku_scope is None or line.sku in sku_scope:
                    want[line.sku] += line.quantity
    got: Counter[str] = Counter()
    for (kind, sku), evs in by_aggregate.items():
        if kind == "inventory" and (sku_scope is None or sku in sku_scope):
            got[sku] = sum(e.payload.quantity for e in evs if isinstance(e.payload, StockShipped))
    for sku in set(want) | set(got):
        if want[sku] != got[sku]:
            result.fail(f"{sku}: shipped {got[sku]} but confirmed orders hold {want[sku]}")

"""Same-machine peer baseline: the order-fulfilment choreography on the `eventsourcing` library.

The flow of `choreography/policies.py`, written as a `System` of four process applications that
react to each other's events (no orchestrator), run in one process by `SingleThreadedRunner`:

    Orders ──Placed──▶ Inventory ──Reserved / ReservationRejected──▶ Orders
    Orders ──PaymentRequested──▶ Payments ──Captured / Declined──▶ Orders
    Orders ──Paid──▶ Shipping ──Scheduled / Failed──▶ Orders
    Orders ──Rejected / Cancelled / Confirmed──▶ Inventory (release, ship)
    Orders ──Cancelled(refund)──▶ Payments (refund)

Each application has its own event store (its own SQLite file, since the library's SQLite tables
are not namespaced per application) and records the events a policy produces atomically with the
position of the event it processed (tracking), which is the library's exactly-once mechanism.
With `SingleThreadedRunner`, `Orders.place_order()` returns only after the whole cascade it set
off has been processed; `run_peer` checks that every order is terminal when the timer stops.

    python -m bench.peer_eventsourcing --orders 2000 [--persistence memory]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.persistence import Recording
from eventsourcing.sqlite import SQLiteConnectionPool
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System
from eventsourcing.utils import get_topic

NS = uuid5(NAMESPACE_URL, "https://choreo.example/bench/peer-eventsourcing")
DECLINED_TOKEN = "tok_chargeDeclined"
SCARCE_SKU = "SKU-SCARCE"
SKUS = [f"SKU-{i:03d}" for i in range(200)]
SEED_EVENTS = 2 * (len(SKUS) + 1)  # Registered + Added per seeded SKU, not counted as order-flow events

Line = dict[str, Any]  # {"sku": str, "qty": int, "unit_price_cents": int}


def order_uuid(order_id: str) -> UUID:
    return uuid5(NS, f"order:{order_id}")


def stock_uuid(sku: str) -> UUID:
    return uuid5(NS, f"sku:{sku}")


def payment_uuid(order_id: str) -> UUID:
    return uuid5(NS, f"payment:{order_id}")


def shipment_uuid(order_id: str) -> UUID:
    return uuid5(NS, f"shipment:{order_id}")


# ---- aggregates ---------------------------------------------------------------------------


class Order(Aggregate):
    """Placed -> lines answered -> PaymentRequested | Rejected -> Paid | Cancelled -> Confirmed | Cancelled."""

    @staticmethod
    def create_id(order_id: str) -> UUID:
        return order_uuid(order_id)

    @event("Placed")
    def __init__(self, order_id: str, customer_id: str, lines: list[Line], payment_token: str, address: str) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.lines = lines
        self.payment_token = payment_token
        self.address = address
        self.status = "placed"
        self.answers: dict[int, bool] = {}  # line number -> reserved?

    def record_line(self, line: int, *, reserved: bool, reason: str = "") -> None:
        if self.status != "placed" or line in self.answers:
            return
        if reserved:
            self._line_reserved(line)
        else:
            self._line_rejected(line, reason)
        if len(self.answers) < len(self.lines):
            return
        if all(self.answers.values()):
            amount = sum(x["qty"] * x["unit_price_cents"] for x in self.lines)
            self._request_payment(self.order_id, self.customer_id, amount, self.payment_token)
        else:
            self._reject(self.order_id, "out of stock", self._reserved_lines())

    def record_payment(self, *, captured: bool, reason: str = "") -> None:
        if self.status != "payment_requested":
            return
        if captured:
            items = sum(x["qty"] for x in self.lines)
            self._paid(self.order_id, self.address, items)
        else:
            self._cancel(self.order_id, f"payment declined: {reason}", False, self._reserved_lines())

    def record_shipment(self, *, scheduled: bool, detail: str = "") -> None:
        if self.status != "paid":
            return
        if scheduled:
            self._confirm(self.order_id, detail, self._reserved_lines())
        else:
            self._cancel(self.order_id, f"shipment failed: {detail}", True, self._reserved_lines())

    def _reserved_lines(self) -> list[list[Any]]:
        return [[n, self.lines[n]["sku"]] for n, ok in sorted(self.answers.items()) if ok]

    @event("LineReserved")
    def _line_reserved(self, line: int) -> None:
        self.answers[line] = True

    @event("LineRejected")
    def _line_rejected(self, line: int, reason: str) -> None:
        self.answers[line] = False

    @event("PaymentRequested")
    def _request_payment(self, order_id: str, customer_id: str, amount_cents: int, payment_token: str) -> None:
        self.status = "payment_requested"

    @event("Rejected")
    def _reject(self, order_id: str, reason: str, release: list[list[Any]]) -> None:
        self.status = "rejected"

    @event("Paid")
    def _paid(self, order_id: str, address: str, items: int) -> None:
        self.status = "paid"

    @event("Cancelled")
    def _cancel(self, order_id: str, reason: str, refund: bool, release: list[list[Any]]) -> None:
        self.status = "cancelled"
        self.reason = reason

    @event("Confirmed")
    def _confirm(self, order_id: str, tracking_id: str, ship: list[list[Any]]) -> None:
        self.status = "confirmed"


TERMINAL_EVENTS: tuple[type[Any], ...] = (Order.Rejected, Order.Cancelled, Order.Confirmed)  # type: ignore[attr-defined]


class StockItem(Aggregate):
    """One SKU: available units, and reservations keyed by (order, line) until released or shipped."""

    @staticmethod
    def create_id(sku: str) -> UUID:
        return stock_uuid(sku)

    @event("Registered")
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.available = 0
        self.added = 0
        self.shipped = 0
        self.reservations: dict[str, int] = {}

    @event("Added")
    def add(self, qty: int) -> None:
        self.available += qty
        self.added += qty

    def reserve(self, order_id: str, line: int, qty: int) -> None:
        if f"{order_id}#{line}" in self.reservations:
            return
        if qty <= self.available:
            self._reserved(order_id, line, self.sku, qty)
        else:
            self._rejected(order_id, line, self.sku, qty, f"only {self.available} available")

    def release(self, order_id: str, line: int) -> None:
        qty = self.reservations.get(f"{order_id}#{line}")
        if qty is not None:
            self._released(order_id, line, qty)

    def ship(self, order_id: str, line: int) -> None:
        qty = self.reservations.get(f"{order_id}#{line}")
        if qty is not None:
            self._shipped(order_id, line, qty)

    @event("Reserved")
    def _reserved(self, order_id: str, line: int, sku: str, qty: int) -> None:
        self.available -= qty
        self.reservations[f"{order_id}#{line}"] = qty

    @event("ReservationRejected")
    def _rejected(self, order_id: str, line: int, sku: str, qty: int, reason: str) -> None:
        pass

    @event("Released")
    def _released(self, order_id: str, line: int, qty: int) -> None:
        del self.reservations[f"{order_id}#{line}"]
        self.available += qty

    @event("Shipped")
    def _shipped(self, order_id: str, line: int, qty: int) -> None:
        del self.reservations[f"{order_id}#{line}"]
        self.shipped += qty


class Payment(Aggregate):
    """Created either Captured or Declined (two alternative "created" events); Captured may be Refunded."""

    class Captured(Aggregate.Created):
        order_id: str
        amount_cents: int

    class Declined(Aggregate.Created):
        order_id: str
        reason: str

    def __init__(self, order_id: str, amount_cents: int = 0, reason: str = "") -> None:
        self.order_id = order_id
        self.amount_cents = amount_cents
        self.status = "declined" if reason else "captured"

    @event("Refunded")
    def refund(self, order_id: str, reason: str) -> None:
        self.status = "refunded"


class Shipment(Aggregate):
    """Created either Scheduled or Failed."""

    class Scheduled(Aggregate.Created):
        order_id: str
        tracking_id: str

    class Failed(Aggregate.Created):
        order_id: str
        reason: str

    def __init__(self, order_id: str, tracking_id: str = "", reason: str = "") -> None:
        self.order_id = order_id
        self.tracking_id = tracking_id
        self.status = "failed" if reason else "scheduled"


def topics(*classes: type[Any]) -> tuple[str, ...]:
    """The notification topics of event classes (followers pull only these)."""
    return tuple(get_topic(c) for c in classes)


# ---- process applications -----------------------------------------------------------------


class Orders(ProcessApplication[UUID]):
    """Takes PlaceOrder commands; records the answers of Inventory, Payments and Shipping."""

    topics = topics(
        StockItem.Reserved, StockItem.ReservationRejected,  # type: ignore[attr-defined]
        Payment.Captured, Payment.Declined, Shipment.Scheduled, Shipment.Failed,
    )  # fmt: skip

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.terminal_events: Counter[str] = Counter()  # order id -> terminal events recorded

    def place_order(
        self, order_id: str, customer_id: str, lines: list[tuple[str, int, int]], payment_token: str, address: str
    ) -> UUID:
        order_lines = [{"sku": sku, "qty": qty, "unit_price_cents": price} for sku, qty, price in lines]
        order = Order(order_id=order_id, customer_id=customer_id, lines=order_lines,
                      payment_token=payment_token, address=address)  # fmt: skip
        self.save(order)
        return order.id

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        # Runs after the events are committed, before followers are prompted.
        for r in recordings:
            if isinstance(r.domain_event, TERMINAL_EVENTS):
                self.terminal_events[r.domain_event.order_id] += 1
        super()._notify(recordings)

    def _order(self, order_id: str) -> Order:
        order: Order = self.repository.get(order_uuid(order_id))
        assert isinstance(order, Order)
        return order

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]) -> None:
        """Events this application does not react to."""

    @policy.register(StockItem.Reserved)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        order = self._order(e.order_id)
        order.record_line(e.line, reserved=True)
        processing_event.collect_events(order)

    @policy.register(StockItem.ReservationRejected)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        order = self._order(e.order_id)
        order.record_line(e.line, reserved=False, reason=e.reason)
        processing_event.collect_events(order)

    @policy.register(Payment.Captured)
    def _(self, e: Payment.Captured, processing_event: ProcessingEvent[UUID]) -> None:
        order = self._order(e.order_id)
        order.record_payment(captured=True)
        processing_event.collect_events(order)

    @policy.register(Payment.Declined)
    def _(self, e: Payment.Declined, processing_event: ProcessingEvent[UUID]) -> None:
        order = self._order(e.order_id)
        order.record_payment(captured=False, reason=e.reason)
        processing_event.collect_events(order)

    @policy.register(Shipment.Scheduled)
    def _(self, e: Shipment.Scheduled, processing_event: ProcessingEvent[UUID]) -> None:
        order = self._order(e.order_id)
        order.record_shipment(scheduled=True, detail=e.tracking_id)
        processing_event.collect_events(order)

    @policy.register(Shipment.Failed)
    def _(self, e: Shipment.Failed, processing_event: ProcessingEvent[UUID]) -> None:
        order = self._order(e.order_id)
        order.record_shipment(scheduled=False, detail=e.reason)
        processing_event.collect_events(order)


class Inventory(ProcessApplication[UUID]):
    """Reserves each line of a placed order; releases or ships them when the order ends."""

    topics = topics(Order.Placed, Order.Rejected, Order.Cancelled, Order.Confirmed)  # type: ignore[attr-defined]

    def add_stock(self, sku: str, qty: int) -> None:
        item: StockItem
        try:
            item = self.repository.get(stock_uuid(sku))
        except AggregateNotFoundError:
            item = StockItem(sku=sku)
        assert isinstance(item, StockItem)
        item.add(qty)
        self.save(item)

    def _items(self, skus: list[str]) -> dict[str, StockItem]:
        # One object per SKU even when an order has two lines of the same SKU.
        items: dict[str, StockItem] = {}
        for sku in skus:
            if sku not in items:
                item: StockItem
                try:
                    item = self.repository.get(stock_uuid(sku))
                except AggregateNotFoundError:
                    item = StockItem(sku=sku)  # unknown SKU: nothing available, the line is refused
                assert isinstance(item, StockItem)
                items[sku] = item
        return items

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]) -> None:
        """Events this application does not react to."""

    @policy.register(Order.Placed)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        items = self._items([x["sku"] for x in e.lines])
        for n, x in enumerate(e.lines):
            items[x["sku"]].reserve(e.order_id, n, x["qty"])
        processing_event.collect_events(*items.values())

    @policy.register(Order.Rejected)  # type: ignore[attr-defined]
    @policy.register(Order.Cancelled)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        items = self._items([sku for _, sku in e.release])
        for n, sku in e.release:
            items[sku].release(e.order_id, n)
        processing_event.collect_events(*items.values())

    @policy.register(Order.Confirmed)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        items = self._items([sku for _, sku in e.ship])
        for n, sku in e.ship:
            items[sku].ship(e.order_id, n)
        processing_event.collect_events(*items.values())


class Payments(ProcessApplication[UUID]):
    """Captures (or declines) requested payments; refunds cancelled orders that had paid."""

    topics = topics(Order.PaymentRequested, Order.Cancelled)  # type: ignore[attr-defined]

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]) -> None:
        """Events this application does not react to."""

    @policy.register(Order.PaymentRequested)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        pid = payment_uuid(e.order_id)
        if e.payment_token == DECLINED_TOKEN:
            payment = Payment._create(Payment.Declined, id=pid, order_id=e.order_id, reason="card declined")
        else:
            payment = Payment._create(Payment.Captured, id=pid, order_id=e.order_id, amount_cents=e.amount_cents)
        processing_event.collect_events(payment)

    @policy.register(Order.Cancelled)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        if not e.refund:
            return
        payment: Payment = self.repository.get(payment_uuid(e.order_id))
        assert isinstance(payment, Payment)
        if payment.status == "captured":
            payment.refund(e.order_id, e.reason)
            processing_event.collect_events(payment)


class Shipping(ProcessApplication[UUID]):
    """Schedules a shipment for each paid order, or fails it for an undeliverable address."""

    topics = topics(Order.Paid)  # type: ignore[attr-defined]

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]) -> None:
        """Events this application does not react to."""

    @policy.register(Order.Paid)  # type: ignore[attr-defined]
    def _(self, e: Any, processing_event: ProcessingEvent[UUID]) -> None:
        sid = shipment_uuid(e.order_id)
        if "nowhere" in e.address.lower():
            shipment = Shipment._create(Shipment.Failed, id=sid, order_id=e.order_id, reason="undeliverable address")
        else:
            shipment = Shipment._create(
                Shipment.Scheduled, id=sid, order_id=e.order_id, tracking_id=f"TRK-{e.order_id}"
            )
        processing_event.collect_events(shipment)


# Each pipe is a chain leader -> follower -> ...; the edges are Orders<->Inventory, Orders<->Payments,
# Orders<->Shipping, so every application is a processor (both leader and follower).
SYSTEM = System(pipes=[[Orders, Inventory, Orders], [Orders, Payments, Orders], [Orders, Shipping, Orders]])
APPS: tuple[type[ProcessApplication[UUID]], ...] = (Orders, Inventory, Payments, Shipping)


# ---- benchmark ----------------------------------------------------------------------------


def generate_orders(
    orders: int, lines: int, seed: int, declines: float, ship_failures: float, stockouts: float
) -> list[dict[str, Any]]:
    """PlaceOrder commands: `lines` distinct SKUs each; a `stockouts` share also asks for the scarce SKU."""
    rng = random.Random(seed)
    commands = []
    for i in range(orders):
        skus = rng.sample(SKUS, lines)
        if rng.random() < stockouts:
            skus[-1] = SCARCE_SKU
        commands.append({
            "order_id": f"peer-{i}",
            "customer_id": f"c-{rng.randrange(10_000)}",
            "lines": [(sku, 1 if sku == SCARCE_SKU else rng.randint(1, 3), rng.randint(100, 9000)) for sku in skus],
            "payment_token": DECLINED_TOKEN if rng.random() < declines else "tok_visa",
            "address": "1 Nowhere Road" if rng.random() < ship_failures else f"{rng.randint(1, 999)} Main St",
        })  # fmt: skip
    return commands


def sqlite_files(db_path: str | Path) -> dict[str, Path]:
    """One database file per application: `<dir>/<stem>-<app>.sqlite` (the library's SQLite tables,
    including `tracking`, have fixed names, so applications cannot share one file)."""
    base = Path(db_path)
    return {cls.name: base.with_name(f"{base.stem}-{cls.name.lower()}.sqlite") for cls in APPS}


@contextmanager
def sqlite_synchronous(level: str) -> Iterator[None]:
    """Every SQLite connection the library opens meanwhile runs `PRAGMA synchronous=<level>`
    (the library has no setting for it; its pools open their connections when the runner starts)."""
    if level.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {level!r}")
    original = SQLiteConnectionPool._create_connection

    def create(pool: SQLiteConnectionPool) -> Any:
        connection = original(pool)
        connection._sqlite_conn.execute(f"PRAGMA synchronous={level.upper()};")
        return connection

    SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQLiteConnectionPool._create_connection = original  # type: ignore[method-assign]


def make_env(persistence: str, files: dict[str, Path], aggregate_cache: int) -> dict[str, str]:
    if persistence == "memory":
        env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}  # the default; explicit so os.environ can't override
    elif persistence == "sqlite":
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite"}
        env.update({f"{name.upper()}_SQLITE_DBNAME": str(path) for name, path in files.items()})
    else:
        raise ValueError(f"persistence must be 'sqlite' or 'memory', not {persistence!r}")
    if aggregate_cache:
        # Single writer per application here, so cached aggregates need no fast-forward read.
        env.update({"AGGREGATE_CACHE_MAXSIZE": str(aggregate_cache), "AGGREGATE_CACHE_FASTFORWARD": "n"})
    return env


def verify(runner: SingleThreadedRunner[UUID], commands: list[dict[str, Any]]) -> dict[str, Any]:
    """From the stores: every order has exactly one terminal event and agrees with payment and
    stock; every SKU balances with nothing left reserved. Raises AssertionError otherwise."""
    orders, inventory, payments = runner.get(Orders), runner.get(Inventory), runner.get(Payments)
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for c in commands:
        oid = c["order_id"]
        events = list(orders.events.get(order_uuid(oid)))
        terminal = [e for e in events if isinstance(e, TERMINAL_EVENTS)]
        if len(terminal) != 1:
            raise AssertionError(f"order {oid}: {len(terminal)} terminal events ({[type(e).__name__ for e in events]})")
        order: Order = orders.repository.get(order_uuid(oid))
        assert isinstance(order, Order)
        outcomes[order.status] += 1
        if order.status == "cancelled":
            reasons[order.reason.split(":")[0]] += 1
        pay_status: str | None
        try:
            payment: Payment = payments.repository.get(payment_uuid(oid))
            pay_status = payment.status
        except AggregateNotFoundError:
            pay_status = None
        expected = {"rejected": None, "confirmed": "captured"}.get(order.status)
        if order.status == "cancelled":
            expected = "refunded" if order.reason.startswith("shipment") else "declined"
        if pay_status != expected:
            raise AssertionError(f"order {oid} is {order.status} but its payment is {pay_status}")
    for sku in [*SKUS, SCARCE_SKU]:
        item: StockItem = inventory.repository.get(stock_uuid(sku))
        assert isinstance(item, StockItem)
        if item.reservations or item.available + item.shipped != item.added:
            raise AssertionError(
                f"{sku}: added {item.added}, available {item.available}, shipped {item.shipped}, "
                f"still reserved {item.reservations}"
            )
    return {"outcomes": dict(sorted(outcomes.items())), "cancel_reasons": dict(sorted(reasons.items()))}


def run_peer(
    orders: int = 2000,
    lines: int = 2,
    seed: int = 1,
    declines: float = 0.10,
    ship_failures: float = 0.05,
    stockouts: float = 0.10,
    db_path: str | None = None,
    persistence: str = "sqlite",
    aggregate_cache: int = 0,
    synchronous: str = "FULL",
) -> dict[str, Any]:
    """Run `orders` orders through the System and return throughput and outcomes.

    `persistence` is "sqlite" (one file per application, in a temporary directory removed
    afterwards, or next to `db_path` as `<stem>-<app>.sqlite` and kept) or "memory" (POPO).
    `aggregate_cache` > 0 turns on the library's aggregate cache (default off: every policy call
    reads the aggregate's events back from the store, the library's default behaviour).
    `synchronous`: SQLite's `PRAGMA synchronous` on every connection. The library opens file
    databases in WAL mode and leaves SQLite's default, FULL (an fsync per commit); NORMAL in WAL
    mode syncs at checkpoints, as the Kafka side (no fsync per message) does."""
    if not 1 <= lines <= len(SKUS):
        raise ValueError(f"lines must be between 1 and {len(SKUS)}")
    if persistence not in ("sqlite", "memory"):
        raise ValueError(f"persistence must be 'sqlite' or 'memory', not {persistence!r}")
    commands = generate_orders(orders, lines, seed, declines, ship_failures, stockouts)
    tmp = tempfile.TemporaryDirectory(prefix="peer-es-") if persistence == "sqlite" and db_path is None else None
    files = sqlite_files(Path(tmp.name) / "peer.sqlite" if tmp else Path(db_path or "peer.sqlite"))
    if persistence == "sqlite" and tmp is None:
        existing = [str(p) for p in files.values() if p.exists()]
        if existing:
            raise FileExistsError(f"refusing to reuse existing databases: {existing}")
    with sqlite_synchronous(synchronous):  # the pools open connections on demand: for the whole run
        runner: SingleThreadedRunner[UUID] = SingleThreadedRunner(
            SYSTEM, env=make_env(persistence, files, aggregate_cache)
        )
        try:
            runner.start()
            inventory = runner.get(Inventory)
            for sku in SKUS:
                inventory.add_stock(sku, 3 * orders)  # plenty: an order asks at most 3 of a SKU
            inventory.add_stock(SCARCE_SKU, 1)
            app = runner.get(Orders)

            t0 = time.perf_counter()
            for c in commands:
                app.place_order(**c)  # returns after the whole cascade has been processed
            seconds = time.perf_counter() - t0

            # Nothing can still be in flight: the runner processed every prompt inside place_order.
            unfinished = [c["order_id"] for c in commands if app.terminal_events[c["order_id"]] != 1]
            if unfinished:
                raise AssertionError(f"{len(unfinished)} orders not (exactly once) terminal when the timer stopped")
            checked = verify(runner, commands)
            recorded = {cls.name: runner.get(cls).recorder.max_notification_id() or 0 for cls in APPS}
        finally:
            runner.stop()
            if tmp is not None:
                tmp.cleanup()

    events = sum(recorded.values()) - SEED_EVENTS
    return {
        "orders": orders,
        "seconds": round(seconds, 4),
        "orders_per_s": round(orders / seconds, 1),
        "outcomes": checked["outcomes"],
        "cancel_reasons": checked["cancel_reasons"],
        "events_recorded": events,
        "events_per_s": round(events / seconds, 1),
        "events_by_app": recorded,  # including the stock seeding
        "persistence": persistence,
        "runner": "SingleThreadedRunner",
        "library": f"eventsourcing {version('eventsourcing')}",
        "aggregate_cache": aggregate_cache,
        **({"sqlite": f"WAL, synchronous={synchronous}"} if persistence == "sqlite" else {}),
        "lines": lines,
        "seed": seed,
        **({"db_files": [str(p) for p in files.values()]} if persistence == "sqlite" and db_path else {}),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--lines", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--declines", type=float, default=0.10)
    p.add_argument("--ship-failures", type=float, default=0.05)
    p.add_argument("--stockouts", type=float, default=0.10)
    p.add_argument("--db-path", default=None, help="keep the SQLite files as <stem>-<app>.sqlite next to this path")
    p.add_argument("--persistence", choices=["sqlite", "memory"], default="sqlite")
    p.add_argument("--aggregate-cache", type=int, default=0, help="library aggregate cache size (0 = off, the default)")
    p.add_argument("--synchronous", default="FULL", help="SQLite PRAGMA synchronous (FULL is SQLite's default)")
    a = p.parse_args(argv)
    result = run_peer(
        orders=a.orders, lines=a.lines, seed=a.seed, declines=a.declines, ship_failures=a.ship_failures,
        stockouts=a.stockouts, db_path=a.db_path, persistence=a.persistence, aggregate_cache=a.aggregate_cache,
        synchronous=a.synchronous,
    )  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

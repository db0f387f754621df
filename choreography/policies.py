"""Policies: pure functions `event -> [commands]`, and one declarative wiring table per service.

Each service owns the policies that produce *its* commands, reacting to other services' events.
No component knows the whole saga. A policy's command ids derive from the event id, so running
it twice on the same event yields the same commands, which the target shard deduplicates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from events.base import Command, Event, StoredEvent
from events.inventory import ReleaseStock, ReserveStock, ShipStock, StockReservationRejected, StockReserved
from events.orders import (
    OrderCancelled,
    OrderConfirmed,
    OrderPaid,
    OrderPaymentRequested,
    OrderPlaced,
    OrderRejected,
    RecordPaymentCaptured,
    RecordPaymentDeclined,
    RecordShipmentFailed,
    RecordShipmentScheduled,
    RecordStockRejected,
    RecordStockReserved,
    StrayPaymentRefunded,
    StrayReservationReleased,
    StrayShipmentCancelled,
)
from events.payment import CapturePayment, PaymentCaptured, PaymentDeclined, RefundPayment
from events.shipping import CancelShipment, ScheduleShipment, ShipmentFailed, ShipmentScheduled

Policy = Callable[[Any, "Meta"], list[Command]]


@dataclass(frozen=True)
class Meta:
    """What a policy may copy from the event's envelope onto the commands it sends."""

    event_id: str
    correlation_id: str

    def ids(self, n: int) -> dict[str, str]:
        return {
            "command_id": f"{self.event_id}:{n}",
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
        }


@dataclass(frozen=True)
class On:
    """Wiring row: when an event of `event` type arrives, run `policy`."""

    event: type[Event]
    policy: Policy


def run_policies(wiring: Sequence[On], stored: StoredEvent) -> list[Command]:
    meta = Meta(stored.envelope.event_id, stored.envelope.correlation_id)
    commands: list[Command] = []
    for row in wiring:
        if isinstance(stored.payload, row.event):
            commands.extend(row.policy(stored.payload, meta))
    return commands


def source_services(wiring: Sequence[On]) -> list[str]:
    return sorted({row.event.aggregate_type for row in wiring})


# ---- inventory reacts to orders -----------------------------------------------------------


def reserve_each_line(e: OrderPlaced, m: Meta) -> list[Command]:
    return [
        ReserveStock(sku=line.sku, order_id=e.order_id, quantity=line.quantity, **m.ids(i))
        for i, line in enumerate(e.lines)
    ]


def release_reserved_lines(e: OrderRejected | OrderCancelled, m: Meta) -> list[Command]:
    return [ReleaseStock(sku=sku, order_id=e.order_id, **m.ids(i)) for i, sku in enumerate(e.release_skus)]


def release_stray_reservation(e: StrayReservationReleased, m: Meta) -> list[Command]:
    return [ReleaseStock(sku=e.sku, order_id=e.order_id, **m.ids(0))]


def ship_reserved_stock(e: OrderConfirmed, m: Meta) -> list[Command]:
    return [ShipStock(sku=sku, order_id=e.order_id, **m.ids(i)) for i, sku in enumerate(e.skus)]


# ---- payment reacts to orders -------------------------------------------------------------


def capture_payment(e: OrderPaymentRequested, m: Meta) -> list[Command]:
    return [
        CapturePayment(
            order_id=e.order_id, customer_id=e.customer_id, amount_cents=e.amount_cents,
            payment_token=e.payment_token, **m.ids(0),
        )
    ]  # fmt: skip


def refund_cancelled_order(e: OrderCancelled, m: Meta) -> list[Command]:
    return [RefundPayment(order_id=e.order_id, reason=e.reason, **m.ids(0))] if e.refund else []


def refund_stray_payment(e: StrayPaymentRefunded, m: Meta) -> list[Command]:
    return [RefundPayment(order_id=e.order_id, reason="order already ended", **m.ids(0))]


# ---- shipping reacts to orders ------------------------------------------------------------


def schedule_shipment(e: OrderPaid, m: Meta) -> list[Command]:
    items = sum(line.quantity for line in e.lines)
    return [ScheduleShipment(order_id=e.order_id, address=e.shipping_address, items=items, **m.ids(0))]


def cancel_stray_shipment(e: StrayShipmentCancelled, m: Meta) -> list[Command]:
    return [CancelShipment(order_id=e.order_id, reason="order already ended", **m.ids(0))]


# ---- order reacts to inventory, payment and shipping --------------------------------------


def record_reservation(e: StockReserved, m: Meta) -> list[Command]:
    return [RecordStockReserved(order_id=e.order_id, sku=e.sku, **m.ids(0))]


def record_reservation_rejected(e: StockReservationRejected, m: Meta) -> list[Command]:
    return [RecordStockRejected(order_id=e.order_id, sku=e.sku, reason=e.reason, **m.ids(0))]


def record_capture(e: PaymentCaptured, m: Meta) -> list[Command]:
    return [RecordPaymentCaptured(order_id=e.order_id, amount_cents=e.amount_cents, **m.ids(0))]


def record_decline(e: PaymentDeclined, m: Meta) -> list[Command]:
    return [RecordPaymentDeclined(order_id=e.order_id, reason=e.reason, **m.ids(0))]


def record_shipment(e: ShipmentScheduled, m: Meta) -> list[Command]:
    return [RecordShipmentScheduled(order_id=e.order_id, tracking_id=e.tracking_id, **m.ids(0))]


def record_shipment_failure(e: ShipmentFailed, m: Meta) -> list[Command]:
    return [RecordShipmentFailed(order_id=e.order_id, reason=e.reason, **m.ids(0))]


WIRING: dict[str, list[On]] = {
    "inventory": [
        On(OrderPlaced, reserve_each_line),
        On(OrderRejected, release_reserved_lines),
        On(OrderCancelled, release_reserved_lines),
        On(StrayReservationReleased, release_stray_reservation),
        On(OrderConfirmed, ship_reserved_stock),
    ],
    "payment": [
        On(OrderPaymentRequested, capture_payment),
        On(OrderCancelled, refund_cancelled_order),
        On(StrayPaymentRefunded, refund_stray_payment),
    ],
    "shipping": [
        On(OrderPaid, schedule_shipment),
        On(StrayShipmentCancelled, cancel_stray_shipment),
    ],
    "order": [
        On(StockReserved, record_reservation),
        On(StockReservationRejected, record_reservation_rejected),
        On(PaymentCaptured, record_capture),
        On(PaymentDeclined, record_decline),
        On(ShipmentScheduled, record_shipment),
        On(ShipmentFailed, record_shipment_failure),
    ],
}
"""Per service: the events it reacts to and the policy that turns each into its commands."""

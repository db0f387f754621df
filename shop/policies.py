"""The shop's policies: how each service reacts to the others' events. One wiring table per
service, named in cluster.yaml as the service's `policies:`."""

from __future__ import annotations

from choreography.policies import Meta, On
from shop.messages.inventory import ReleaseStock, ReserveStock, ShipStock, StockReservationRejected, StockReserved
from shop.messages.orders import (
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
from shop.messages.payment import CapturePayment, PaymentCaptured, PaymentDeclined, RefundPayment
from shop.messages.shipping import CancelShipment, ScheduleShipment, ShipmentFailed, ShipmentScheduled

# ---- inventory reacts to orders -----------------------------------------------------------


def reserve_each_line(e: OrderPlaced, m: Meta) -> list[ReserveStock]:
    return [
        ReserveStock(sku=line.sku, order_id=e.order_id, quantity=line.quantity, **m.ids(i))
        for i, line in enumerate(e.lines)
    ]


def release_reserved_lines(e: OrderRejected | OrderCancelled, m: Meta) -> list[ReleaseStock]:
    return [ReleaseStock(sku=sku, order_id=e.order_id, **m.ids(i)) for i, sku in enumerate(e.release_skus)]


def release_stray_reservation(e: StrayReservationReleased, m: Meta) -> list[ReleaseStock]:
    return [ReleaseStock(sku=e.sku, order_id=e.order_id, **m.ids(0))]


def ship_reserved_stock(e: OrderConfirmed, m: Meta) -> list[ShipStock]:
    return [ShipStock(sku=sku, order_id=e.order_id, **m.ids(i)) for i, sku in enumerate(e.skus)]


# ---- payment reacts to orders -------------------------------------------------------------


def capture_payment(e: OrderPaymentRequested, m: Meta) -> list[CapturePayment]:
    return [
        CapturePayment(
            order_id=e.order_id, customer_id=e.customer_id, amount_cents=e.amount_cents,
            payment_token=e.payment_token, **m.ids(0),
        )
    ]  # fmt: skip


def refund_cancelled_order(e: OrderCancelled, m: Meta) -> list[RefundPayment]:
    return [RefundPayment(order_id=e.order_id, reason=e.reason, **m.ids(0))] if e.refund else []


def refund_stray_payment(e: StrayPaymentRefunded, m: Meta) -> list[RefundPayment]:
    return [RefundPayment(order_id=e.order_id, reason="order already ended", **m.ids(0))]


# ---- shipping reacts to orders ------------------------------------------------------------


def schedule_shipment(e: OrderPaid, m: Meta) -> list[ScheduleShipment]:
    items = sum(line.quantity for line in e.lines)
    return [ScheduleShipment(order_id=e.order_id, address=e.shipping_address, items=items, **m.ids(0))]


def cancel_stray_shipment(e: StrayShipmentCancelled, m: Meta) -> list[CancelShipment]:
    return [CancelShipment(order_id=e.order_id, reason="order already ended", **m.ids(0))]


# ---- order reacts to inventory, payment and shipping --------------------------------------


def record_reservation(e: StockReserved, m: Meta) -> list[RecordStockReserved]:
    return [RecordStockReserved(order_id=e.order_id, sku=e.sku, **m.ids(0))]


def record_reservation_rejected(e: StockReservationRejected, m: Meta) -> list[RecordStockRejected]:
    return [RecordStockRejected(order_id=e.order_id, sku=e.sku, reason=e.reason, **m.ids(0))]


def record_capture(e: PaymentCaptured, m: Meta) -> list[RecordPaymentCaptured]:
    return [RecordPaymentCaptured(order_id=e.order_id, amount_cents=e.amount_cents, **m.ids(0))]


def record_decline(e: PaymentDeclined, m: Meta) -> list[RecordPaymentDeclined]:
    return [RecordPaymentDeclined(order_id=e.order_id, reason=e.reason, **m.ids(0))]


def record_shipment(e: ShipmentScheduled, m: Meta) -> list[RecordShipmentScheduled]:
    return [RecordShipmentScheduled(order_id=e.order_id, tracking_id=e.tracking_id, **m.ids(0))]


def record_shipment_failure(e: ShipmentFailed, m: Meta) -> list[RecordShipmentFailed]:
    return [RecordShipmentFailed(order_id=e.order_id, reason=e.reason, **m.ids(0))]


INVENTORY_POLICIES: list[On] = [
    On(OrderPlaced, reserve_each_line),
    On(OrderRejected, release_reserved_lines),
    On(OrderCancelled, release_reserved_lines),
    On(StrayReservationReleased, release_stray_reservation),
    On(OrderConfirmed, ship_reserved_stock),
]
"""Inventory reacts to orders: reserve each line, release on rejection or cancel, ship on confirmation."""

PAYMENT_POLICIES: list[On] = [
    On(OrderPaymentRequested, capture_payment),
    On(OrderCancelled, refund_cancelled_order),
    On(StrayPaymentRefunded, refund_stray_payment),
]
"""Payment reacts to orders: capture when asked, refund a cancelled or already ended order."""

SHIPPING_POLICIES: list[On] = [
    On(OrderPaid, schedule_shipment),
    On(StrayShipmentCancelled, cancel_stray_shipment),
]
"""Shipping reacts to paid orders, and cancels a shipment for an order that already ended."""

ORDER_POLICIES: list[On] = [
    On(StockReserved, record_reservation),
    On(StockReservationRejected, record_reservation_rejected),
    On(PaymentCaptured, record_capture),
    On(PaymentDeclined, record_decline),
    On(ShipmentScheduled, record_shipment),
    On(ShipmentFailed, record_shipment_failure),
]
"""The order records what inventory, payment and shipping answered."""

WIRING: dict[str, list[On]] = {
    "inventory": INVENTORY_POLICIES,
    "payment": PAYMENT_POLICIES,
    "shipping": SHIPPING_POLICIES,
    "order": ORDER_POLICIES,
}
"""Every service's wiring table, for tests that run the whole choreography in memory."""

"""Commands and events of the order service."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from events.base import Command, DomainModel, Event

ORDER = "order"
APPROVED_TOKEN = "tok_visa"
DEFAULT_CURRENCY = "USD"
CURRENCY_PATTERN = r"^[A-Z]{3}$"  # an ISO 4217 alphabetic code
MAX_QUANTITY = 10_000
MAX_LINES = 100
MAX_UNIT_PRICE_CENTS = 10**9
MAX_ORDER_TOTAL_CENTS = MAX_LINES * MAX_QUANTITY * MAX_UNIT_PRICE_CENTS
"""10**15 cents: thousands of the largest orders still sum within ClickHouse's Int64 (9.2 * 10**18)."""


class OrderLine(DomainModel):
    """Shared by PlaceOrder and the stored OrderPlaced events, so its own schema stays as stored;
    the command bounds the price at the door (`_bounded_price`)."""

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=MAX_QUANTITY)
    unit_price_cents: int = Field(ge=0)


class PricedLine(OrderLine):
    """An order line as a command accepts it: the price is bounded, so every order total fits in
    Int64. Validated lines become plain OrderLines again (see `PlaceOrder._plain_lines`)."""

    unit_price_cents: int = Field(ge=0, le=MAX_UNIT_PRICE_CENTS)


class OrderCommand(Command):
    target: ClassVar[str] = ORDER
    order_id: str = Field(min_length=1, max_length=64)

    @property
    def aggregate_id(self) -> str:
        return self.order_id


# ---- commands from customers --------------------------------------------------------


class PlaceOrder(OrderCommand):
    customer_id: str = Field(min_length=1, max_length=64)
    if TYPE_CHECKING:  # callers pass OrderLines; they are validated as PricedLines
        lines: tuple[OrderLine, ...] = Field(min_length=1, max_length=MAX_LINES)
    else:
        lines: tuple[PricedLine, ...] = Field(min_length=1, max_length=MAX_LINES)
    payment_token: str = Field(default=APPROVED_TOKEN, min_length=1, max_length=64)
    shipping_address: str = Field(default="1 Main St, Springfield", min_length=1, max_length=200)
    currency: str = Field(default=DEFAULT_CURRENCY, pattern=CURRENCY_PATTERN)

    @field_validator("lines", mode="before")
    @classmethod
    def _check_lines_as_priced(cls, lines: Any) -> Any:
        if isinstance(lines, list | tuple):
            return [line.model_dump() if isinstance(line, OrderLine) else line for line in lines]
        return lines

    @field_validator("lines")
    @classmethod
    def _plain_lines(cls, lines: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise ValueError("each SKU may appear on only one line")
        return tuple(OrderLine.model_construct(**line.__dict__) for line in lines)


class CancelOrder(OrderCommand):
    reason: str = Field(default="customer request", max_length=200)


# ---- commands sent by other services' policies ----------------------------------------


class RecordStockReserved(OrderCommand):
    sku: str


class RecordStockRejected(OrderCommand):
    sku: str
    reason: str


class RecordPaymentCaptured(OrderCommand):
    amount_cents: int = Field(le=MAX_ORDER_TOTAL_CENTS)


class RecordPaymentDeclined(OrderCommand):
    reason: str


class RecordShipmentScheduled(OrderCommand):
    tracking_id: str


class RecordShipmentFailed(OrderCommand):
    reason: str


class ExpireOrder(OrderCommand):
    """Sent by the order shard itself when an order's deadline passes."""


# ---- events -------------------------------------------------------------------------


class OrderEvent(Event):
    aggregate_type: ClassVar[str] = ORDER
    order_id: str


class OrderPlaced(OrderEvent):
    """v2 renamed v1's `shipping_address` to `ship_to` and added `currency` (events/upcasters.py)."""

    schema_version: ClassVar[int] = 2

    customer_id: str
    lines: tuple[OrderLine, ...]
    total_cents: int
    payment_token: str = APPROVED_TOKEN
    ship_to: str = ""
    currency: str = Field(default=DEFAULT_CURRENCY, pattern=CURRENCY_PATTERN)
    deadline_at: datetime | None = None


class OrderLineReserved(OrderEvent):
    sku: str


class OrderLineRejected(OrderEvent):
    sku: str
    reason: str


class OrderPaymentRequested(OrderEvent):
    customer_id: str
    amount_cents: int
    payment_token: str


class OrderPaid(OrderEvent):
    amount_cents: int
    shipping_address: str
    lines: tuple[OrderLine, ...]


class OrderConfirmed(OrderEvent):
    tracking_id: str
    skus: tuple[str, ...]


class OrderRejected(OrderEvent):
    reason: str
    release_skus: tuple[str, ...]


class OrderCancelled(OrderEvent):
    reason: str
    release_skus: tuple[str, ...] = ()
    refund: bool = False


class StrayReservationReleased(OrderEvent):
    """A reservation arrived after the order ended; its stock goes back."""

    sku: str


class StrayShipmentCancelled(OrderEvent):
    """A shipment was scheduled after the order ended; it is called off."""


class StrayPaymentRefunded(OrderEvent):
    """A capture arrived after the order ended; the money goes back."""

    amount_cents: int


TERMINAL_EVENTS: tuple[type[Event], ...] = (OrderConfirmed, OrderRejected, OrderCancelled)
"""The events that end an order's saga; each order has exactly one of them."""
OUTCOMES = {"OrderConfirmed": "confirmed", "OrderRejected": "rejected", "OrderCancelled": "cancelled"}
"""Terminal event type -> the order's final status."""

ORDER_COMMANDS: tuple[type[Command], ...] = (
    PlaceOrder, CancelOrder, RecordStockReserved, RecordStockRejected, RecordPaymentCaptured,
    RecordPaymentDeclined, RecordShipmentScheduled, RecordShipmentFailed, ExpireOrder,
)  # fmt: skip
ORDER_EVENTS: tuple[type[Event], ...] = (
    OrderPlaced, OrderLineReserved, OrderLineRejected, OrderPaymentRequested, OrderPaid,
    OrderConfirmed, OrderRejected, OrderCancelled, StrayReservationReleased, StrayPaymentRefunded,
    StrayShipmentCancelled,
)  # fmt: skip

"""Commands and events of the payment service (aggregate: Payment, keyed by order id)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from events.base import Command, Event
from shop.messages.orders import MAX_ORDER_TOTAL_CENTS

PAYMENT = "payment"


class PaymentCommand(Command):
    target: ClassVar[str] = PAYMENT
    order_id: str = Field(min_length=1, max_length=64)

    @property
    def aggregate_id(self) -> str:
        return self.order_id


class CapturePayment(PaymentCommand):
    customer_id: str
    amount_cents: int = Field(ge=0, le=MAX_ORDER_TOTAL_CENTS)
    payment_token: str


class RefundPayment(PaymentCommand):
    reason: str = ""


class PaymentEvent(Event):
    aggregate_type: ClassVar[str] = PAYMENT
    order_id: str


class PaymentCaptured(PaymentEvent):
    customer_id: str
    amount_cents: int


class PaymentDeclined(PaymentEvent):
    amount_cents: int
    reason: str


class PaymentRefunded(PaymentEvent):
    amount_cents: int
    reason: str


PAYMENT_COMMANDS: tuple[type[Command], ...] = (CapturePayment, RefundPayment)
PAYMENT_EVENTS: tuple[type[Event], ...] = (PaymentCaptured, PaymentDeclined, PaymentRefunded)

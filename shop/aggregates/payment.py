"""The Payment aggregate (keyed by order id): capture once, refund at most what was captured."""

from __future__ import annotations

from enum import StrEnum

from actors.aggregate import DomainError
from events.base import Command, DomainModel, Event
from shop.messages.payment import (
    PAYMENT,
    CapturePayment,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
)

DECLINED_TOKENS = frozenset({"tok_chargeDeclined", "tok_insufficientFunds"})
"""Test card tokens the simulated gateway declines, as payment providers' sandboxes do."""


class PaymentStatus(StrEnum):
    NONE = "none"
    CAPTURED = "captured"
    DECLINED = "declined"
    REFUNDED = "refunded"


class PaymentState(DomainModel):
    order_id: str = ""
    status: PaymentStatus = PaymentStatus.NONE
    captured_cents: int = 0
    refunded_cents: int = 0


class PaymentAggregate:
    aggregate_type = PAYMENT
    state_type = PaymentState
    benign_rejections: frozenset[str] = frozenset()
    """None: late and repeated answers from other services decide to no events, not to a rejection."""

    def initial(self) -> PaymentState:
        return PaymentState()

    def decide(self, state: PaymentState, command: Command) -> list[Event]:
        match command:
            case CapturePayment():
                if state.status is not PaymentStatus.NONE:
                    return []
                if command.payment_token in DECLINED_TOKENS:
                    return [
                        PaymentDeclined(
                            order_id=command.order_id, amount_cents=command.amount_cents,
                            reason=f"card declined ({command.payment_token})",
                        )
                    ]  # fmt: skip
                return [
                    PaymentCaptured(
                        order_id=command.order_id, customer_id=command.customer_id,
                        amount_cents=command.amount_cents,
                    )
                ]  # fmt: skip
            case RefundPayment():
                if state.status is not PaymentStatus.CAPTURED:
                    return []
                return [
                    PaymentRefunded(
                        order_id=command.order_id, amount_cents=state.captured_cents,
                        reason=command.reason,
                    )
                ]  # fmt: skip
        raise DomainError("unsupported", f"payment cannot handle {command.type_name()}")

    def evolve(self, state: PaymentState, event: Event) -> PaymentState:
        match event:
            case PaymentCaptured():
                return PaymentState(
                    order_id=event.order_id, status=PaymentStatus.CAPTURED,
                    captured_cents=event.amount_cents,
                )  # fmt: skip
            case PaymentDeclined():
                return PaymentState(order_id=event.order_id, status=PaymentStatus.DECLINED)
            case PaymentRefunded():
                return state.model_copy(
                    update={
                        "status": PaymentStatus.REFUNDED,
                        "refunded_cents": state.refunded_cents + event.amount_cents,
                    }
                )
        return state

"""Given-when-then tests of the pure Payment aggregate: capture once, refund at most what was captured."""

from __future__ import annotations

import pytest

from actors.aggregate import fold
from choreography.testing import given
from events.base import Command, Event
from shop.aggregates.payment import DECLINED_TOKENS, PaymentAggregate, PaymentState, PaymentStatus
from shop.messages.orders import APPROVED_TOKEN
from shop.messages.payment import CapturePayment, PaymentCaptured, PaymentDeclined, PaymentRefunded, RefundPayment
from shop.messages.shipping import CancelShipment

PAYMENT = PaymentAggregate()
CAPTURE = CapturePayment(order_id="o1", customer_id="c1", amount_cents=399, payment_token=APPROVED_TOKEN)
CAPTURED = PaymentCaptured(order_id="o1", customer_id="c1", amount_cents=399)
DECLINED = PaymentDeclined(order_id="o1", amount_cents=399, reason="card declined (tok_chargeDeclined)")
REFUNDED = PaymentRefunded(order_id="o1", amount_cents=399, reason="shipment failed")


def replay(*history: Event) -> PaymentState:
    return fold(PAYMENT, history)


def capture_with(token: str) -> CapturePayment:
    return CAPTURE.model_copy(update={"payment_token": token})


# ---- capture ------------------------------------------------------------------------


def test_capturing_with_an_approved_token_captures_the_amount() -> None:
    state = given(PAYMENT).when(CAPTURE).then(CAPTURED)
    assert state.status is PaymentStatus.CAPTURED
    assert (state.order_id, state.captured_cents, state.refunded_cents) == ("o1", 399, 0)


def test_the_sandbox_declines_exactly_the_documented_tokens() -> None:
    assert frozenset({"tok_chargeDeclined", "tok_insufficientFunds"}) == DECLINED_TOKENS
    assert APPROVED_TOKEN not in DECLINED_TOKENS


@pytest.mark.parametrize("token", sorted(DECLINED_TOKENS))
def test_capturing_with_a_declined_token_is_declined_with_the_token_in_the_reason(token: str) -> None:
    state = (
        given(PAYMENT)
        .when(capture_with(token))
        .then(PaymentDeclined(order_id="o1", amount_cents=399, reason=f"card declined ({token})"))
    )
    assert state.status is PaymentStatus.DECLINED
    assert state.captured_cents == 0


@pytest.mark.parametrize("token", ["tok_mastercard", "tok_CHARGEDECLINED", "tok_chargeDeclined2"])
def test_any_other_token_is_captured(token: str) -> None:
    given(PAYMENT).when(capture_with(token)).then(CAPTURED)


def test_a_zero_amount_is_captured() -> None:
    state = (
        given(PAYMENT)
        .when(CAPTURE.model_copy(update={"amount_cents": 0}))
        .then(PaymentCaptured(order_id="o1", customer_id="c1", amount_cents=0))
    )
    assert state.status is PaymentStatus.CAPTURED


def test_a_negative_amount_is_refused_by_validation() -> None:
    with pytest.raises(ValueError, match="amount_cents"):
        CapturePayment(order_id="o1", customer_id="c1", amount_cents=-1, payment_token=APPROVED_TOKEN)


@pytest.mark.parametrize(
    "history",
    [(CAPTURED,), (DECLINED,), (CAPTURED, REFUNDED)],
    ids=["captured", "declined", "refunded"],
)
def test_a_payment_is_decided_only_once(history: tuple[Event, ...]) -> None:
    state = given(PAYMENT, *history).when(CAPTURE).then()
    assert state == replay(*history)


def test_a_declined_payment_is_not_captured_by_a_retry_with_a_good_token() -> None:
    given(PAYMENT, DECLINED).when(capture_with("tok_mastercard")).then()


# ---- refund -------------------------------------------------------------------------


def test_refunding_a_captured_payment_refunds_the_captured_amount() -> None:
    state = given(PAYMENT, CAPTURED).when(RefundPayment(order_id="o1", reason="shipment failed")).then(REFUNDED)
    assert state.status is PaymentStatus.REFUNDED
    assert (state.captured_cents, state.refunded_cents) == (399, 399)


def test_a_refund_never_exceeds_what_was_captured() -> None:
    given(PAYMENT, PaymentCaptured(order_id="o1", customer_id="c1", amount_cents=120)).when(
        RefundPayment(order_id="o1", reason="r")
    ).then(PaymentRefunded(order_id="o1", amount_cents=120, reason="r"))


def test_refunding_twice_refunds_once() -> None:
    state = given(PAYMENT, CAPTURED, REFUNDED).when(RefundPayment(order_id="o1", reason="again")).then()
    assert state.refunded_cents == 399


def test_refunding_a_declined_payment_emits_nothing() -> None:
    given(PAYMENT, DECLINED).when(RefundPayment(order_id="o1")).then()


def test_refunding_a_payment_never_captured_emits_nothing() -> None:
    state = given(PAYMENT).when(RefundPayment(order_id="o1")).then()
    assert state.status is PaymentStatus.NONE


def test_a_command_of_another_service_is_rejected_as_unsupported() -> None:
    given(PAYMENT, CAPTURED).when(CancelShipment(order_id="o1")).then_rejected("unsupported", match="CancelShipment")


# ---- idempotent redelivery ----------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "command"),
    [
        pytest.param((), CAPTURE, id="capture"),
        pytest.param((), capture_with("tok_insufficientFunds"), id="decline"),
        pytest.param((CAPTURED,), RefundPayment(order_id="o1", reason="r"), id="refund"),
    ],
)
def test_a_redelivered_command_decided_against_the_evolved_state_emits_nothing(
    history: tuple[Event, ...], command: Command
) -> None:
    state = replay(*history)
    first = PAYMENT.decide(state, command)
    assert len(first) == 1
    state = PAYMENT.evolve(state, first[0])
    assert PAYMENT.decide(state, command) == []

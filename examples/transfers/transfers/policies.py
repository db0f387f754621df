"""How each service reacts to the other's events: one wiring table per service."""

from __future__ import annotations

from choreography.policies import Meta, On
from transfers.messages import (
    AccountCredited,
    AccountDebited,
    Credit,
    CreditRefused,
    Debit,
    DebitRefused,
    LateDebitReturned,
    RecordCredit,
    RecordCreditRefused,
    RecordDebit,
    RecordDebitRefused,
    Refund,
    TransferDebited,
    TransferFailed,
    TransferRequested,
)


def debit_source(e: TransferRequested, m: Meta) -> list[Debit]:
    return [Debit(account_id=e.from_account, transfer_id=e.transfer_id, amount_cents=e.amount_cents, **m.ids(0))]


def credit_target(e: TransferDebited, m: Meta) -> list[Credit]:
    return [Credit(account_id=e.to_account, transfer_id=e.transfer_id, amount_cents=e.amount_cents, **m.ids(0))]


def refund_source(e: TransferFailed | LateDebitReturned, m: Meta) -> list[Refund]:
    return [Refund(account_id=e.from_account, transfer_id=e.transfer_id, **m.ids(0))]


def record_debit(e: AccountDebited, m: Meta) -> list[RecordDebit]:
    return [RecordDebit(transfer_id=e.transfer_id, **m.ids(0))]


def record_debit_refused(e: DebitRefused, m: Meta) -> list[RecordDebitRefused]:
    return [RecordDebitRefused(transfer_id=e.transfer_id, reason=e.reason, **m.ids(0))]


def record_credit(e: AccountCredited, m: Meta) -> list[RecordCredit]:
    return [RecordCredit(transfer_id=e.transfer_id, **m.ids(0))]


def record_credit_refused(e: CreditRefused, m: Meta) -> list[RecordCreditRefused]:
    return [RecordCreditRefused(transfer_id=e.transfer_id, reason=e.reason, **m.ids(0))]


ACCOUNT_POLICIES = [
    On(TransferRequested, debit_source),
    On(TransferDebited, credit_target),
    On(TransferFailed, refund_source),
    On(LateDebitReturned, refund_source),
]
TRANSFER_POLICIES = [
    On(AccountDebited, record_debit),
    On(DebitRefused, record_debit_refused),
    On(AccountCredited, record_credit),
    On(CreditRefused, record_credit_refused),
]

"""Commands and events of the `transfer` and `account` services."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field, model_validator

from events import Command, Event, Messages

TRANSFER = "transfer"
ACCOUNT = "account"
MAX_CENTS = 10**12
Id = Field(min_length=1, max_length=64)


# ---- transfer -------------------------------------------------------------------------


class TransferCommand(Command):
    target: ClassVar[str] = TRANSFER
    transfer_id: str = Id

    @property
    def aggregate_id(self) -> str:
        return self.transfer_id


class RequestTransfer(TransferCommand):
    from_account: str = Id
    to_account: str = Id
    amount_cents: int = Field(gt=0, le=MAX_CENTS)

    @model_validator(mode="after")
    def _two_accounts(self) -> RequestTransfer:
        if self.from_account == self.to_account:
            raise ValueError("from_account and to_account must differ")
        return self


class RecordDebit(TransferCommand):
    pass


class RecordDebitRefused(TransferCommand):
    reason: str


class RecordCredit(TransferCommand):
    pass


class RecordCreditRefused(TransferCommand):
    reason: str


class ExpireTransfer(TransferCommand):
    pass


class TransferEvent(Event):
    aggregate_type: ClassVar[str] = TRANSFER
    transfer_id: str


class TransferRequested(TransferEvent):
    from_account: str
    to_account: str
    amount_cents: int
    deadline_at: datetime | None = None


class TransferDebited(TransferEvent):
    to_account: str
    amount_cents: int


class TransferCompleted(TransferEvent):
    amount_cents: int


class TransferRejected(TransferEvent):
    """The debit was refused: nothing moved."""

    reason: str


class TransferFailed(TransferEvent):
    """The credit was refused after the debit: the debit is refunded."""

    reason: str
    from_account: str
    amount_cents: int


class TransferExpired(TransferEvent):
    """Not debited within the deadline: nothing moved, and a late debit is handed back."""


class LateDebitReturned(TransferEvent):
    """A debit that arrived after the transfer ended: it is refunded."""

    from_account: str
    amount_cents: int


# ---- account --------------------------------------------------------------------------


class AccountCommand(Command):
    target: ClassVar[str] = ACCOUNT
    account_id: str = Id

    @property
    def aggregate_id(self) -> str:
        return self.account_id


class OpenAccount(AccountCommand):
    balance_cents: int = Field(ge=0, le=MAX_CENTS)


class Debit(AccountCommand):
    transfer_id: str
    amount_cents: int = Field(gt=0, le=MAX_CENTS)


class Credit(AccountCommand):
    transfer_id: str
    amount_cents: int = Field(gt=0, le=MAX_CENTS)


class Refund(AccountCommand):
    """Give back what `transfer_id` debited (no effect if it debited nothing or was refunded)."""

    transfer_id: str


class AccountEvent(Event):
    aggregate_type: ClassVar[str] = ACCOUNT
    account_id: str


class AccountOpened(AccountEvent):
    balance_cents: int


class AccountDebited(AccountEvent):
    transfer_id: str
    amount_cents: int


class DebitRefused(AccountEvent):
    transfer_id: str
    reason: str


class AccountCredited(AccountEvent):
    transfer_id: str
    amount_cents: int


class CreditRefused(AccountEvent):
    transfer_id: str
    reason: str


class DebitRefunded(AccountEvent):
    transfer_id: str
    amount_cents: int


TRANSFER_MESSAGES = Messages(
    events=(TransferRequested, TransferDebited, TransferCompleted, TransferRejected, TransferFailed, TransferExpired,
            LateDebitReturned),
    commands=(RequestTransfer, RecordDebit, RecordDebitRefused, RecordCredit, RecordCreditRefused, ExpireTransfer),
)  # fmt: skip
ACCOUNT_MESSAGES = Messages(
    events=(AccountOpened, AccountDebited, DebitRefused, AccountCredited, CreditRefused, DebitRefunded),
    commands=(OpenAccount, Debit, Credit, Refund),
)

"""The Transfer and Account aggregates: pure state machines, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from actors import DomainError
from events import Command, DomainModel, Event
from transfers.messages import (
    ACCOUNT,
    TRANSFER,
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Credit,
    CreditRefused,
    Debit,
    DebitRefunded,
    DebitRefused,
    ExpireTransfer,
    LateDebitReturned,
    OpenAccount,
    RecordCredit,
    RecordCreditRefused,
    RecordDebit,
    RecordDebitRefused,
    Refund,
    RequestTransfer,
    TransferCompleted,
    TransferDebited,
    TransferExpired,
    TransferFailed,
    TransferRejected,
    TransferRequested,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TransferStatus(StrEnum):
    NONE = "none"
    REQUESTED = "requested"
    DEBITED = "debited"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"


TERMINAL = frozenset({TransferStatus.COMPLETED, TransferStatus.REJECTED, TransferStatus.FAILED, TransferStatus.EXPIRED})


class TransferState(DomainModel):
    transfer_id: str = ""
    status: TransferStatus = TransferStatus.NONE
    from_account: str = ""
    to_account: str = ""
    amount_cents: int = 0
    deadline_at: datetime | None = None


class TransferAggregate:
    """The saga's root. It expires a transfer whose debit has not been answered within the
    deadline; once debited it waits for the credit's answer, which always comes."""

    aggregate_type = TRANSFER
    state_type = TransferState

    def __init__(self, deadline: timedelta | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        self.deadline = deadline
        self.clock = clock

    def initial(self) -> TransferState:
        return TransferState()

    def is_terminal(self, state: TransferState) -> bool:
        return state.status in TERMINAL

    def due_at(self, state: TransferState) -> datetime | None:
        return state.deadline_at if state.status is TransferStatus.REQUESTED else None

    def expire(self, aggregate_id: str) -> ExpireTransfer:
        return ExpireTransfer(transfer_id=aggregate_id, command_id=f"expire:{aggregate_id}")

    def decide(self, state: TransferState, command: Command) -> list[Event]:
        match command:
            case RequestTransfer():
                if state.status is not TransferStatus.NONE:
                    raise DomainError("already_exists", f"transfer {command.transfer_id} already exists")
                deadline_at = self.clock() + self.deadline if self.deadline else None
                return [
                    TransferRequested(
                        transfer_id=command.transfer_id, from_account=command.from_account,
                        to_account=command.to_account, amount_cents=command.amount_cents, deadline_at=deadline_at,
                    )
                ]  # fmt: skip
        if state.status is TransferStatus.NONE:
            raise DomainError("not_found", f"transfer {command.aggregate_id} does not exist")
        tid, status = state.transfer_id, state.status
        match command:
            case RecordDebit() if status is TransferStatus.REQUESTED:
                return [TransferDebited(transfer_id=tid, to_account=state.to_account, amount_cents=state.amount_cents)]
            case RecordDebit() if status in TERMINAL:
                return [LateDebitReturned(transfer_id=tid, from_account=state.from_account,
                                          amount_cents=state.amount_cents)]  # fmt: skip
            case RecordDebitRefused() if status is TransferStatus.REQUESTED:
                return [TransferRejected(transfer_id=tid, reason=command.reason)]
            case RecordCredit() if status is TransferStatus.DEBITED:
                return [TransferCompleted(transfer_id=tid, amount_cents=state.amount_cents)]
            case RecordCreditRefused() if status is TransferStatus.DEBITED:
                return [TransferFailed(transfer_id=tid, reason=command.reason, from_account=state.from_account,
                                       amount_cents=state.amount_cents)]  # fmt: skip
            case ExpireTransfer() if status is TransferStatus.REQUESTED:
                if state.deadline_at is None or self.clock() < state.deadline_at:
                    raise DomainError("not_due", f"transfer {tid} has not reached its deadline")
                return [TransferExpired(transfer_id=tid)]
            case RecordDebit() | RecordDebitRefused() | RecordCredit() | RecordCreditRefused() | ExpireTransfer():
                return []  # a repeated or late answer: nothing left to decide
        raise DomainError("unsupported", f"transfer cannot handle {command.type_name()}")

    def evolve(self, state: TransferState, event: Event) -> TransferState:
        match event:
            case TransferRequested():
                return TransferState(
                    transfer_id=event.transfer_id, status=TransferStatus.REQUESTED, from_account=event.from_account,
                    to_account=event.to_account, amount_cents=event.amount_cents, deadline_at=event.deadline_at,
                )  # fmt: skip
            case TransferDebited():
                return state.model_copy(update={"status": TransferStatus.DEBITED})
            case TransferCompleted():
                return state.model_copy(update={"status": TransferStatus.COMPLETED})
            case TransferRejected():
                return state.model_copy(update={"status": TransferStatus.REJECTED})
            case TransferFailed():
                return state.model_copy(update={"status": TransferStatus.FAILED})
            case TransferExpired():
                return state.model_copy(update={"status": TransferStatus.EXPIRED})
        return state  # LateDebitReturned changes nothing here


class AccountState(DomainModel):
    account_id: str = ""
    opened: bool = False
    balance_cents: int = 0
    debits: dict[str, int] = {}
    """Transfer id -> amount debited and not refunded."""
    settled: frozenset[str] = frozenset()
    """Transfers this account has already answered a credit for, or refunded."""


class AccountAggregate:
    """Balances never go negative; every debit, credit and refund happens once per transfer."""

    aggregate_type = ACCOUNT
    state_type = AccountState

    def initial(self) -> AccountState:
        return AccountState()

    def decide(self, state: AccountState, command: Command) -> list[Event]:
        match command:
            case OpenAccount():
                if state.opened:
                    raise DomainError("already_exists", f"account {command.account_id} already exists")
                return [AccountOpened(account_id=command.account_id, balance_cents=command.balance_cents)]
            case Debit():
                aid, tid = command.account_id, command.transfer_id
                if tid in state.debits or tid in state.settled:
                    return []
                if not state.opened:
                    return [DebitRefused(account_id=aid, transfer_id=tid, reason="no such account")]
                if state.balance_cents < command.amount_cents:
                    return [DebitRefused(account_id=aid, transfer_id=tid, reason="insufficient funds")]
                return [AccountDebited(account_id=aid, transfer_id=tid, amount_cents=command.amount_cents)]
            case Credit():
                aid, tid = command.account_id, command.transfer_id
                if tid in state.settled:
                    return []
                if not state.opened:
                    return [CreditRefused(account_id=aid, transfer_id=tid, reason="no such account")]
                return [AccountCredited(account_id=aid, transfer_id=tid, amount_cents=command.amount_cents)]
            case Refund():
                amount = state.debits.get(command.transfer_id)
                if amount is None:
                    return []
                return [DebitRefunded(account_id=command.account_id, transfer_id=command.transfer_id,
                                      amount_cents=amount)]  # fmt: skip
        raise DomainError("unsupported", f"account cannot handle {command.type_name()}")

    def evolve(self, state: AccountState, event: Event) -> AccountState:
        match event:
            case AccountOpened():
                return AccountState(account_id=event.account_id, opened=True, balance_cents=event.balance_cents)
            case AccountDebited():
                return state.model_copy(update={
                    "balance_cents": state.balance_cents - event.amount_cents,
                    "debits": {**state.debits, event.transfer_id: event.amount_cents},
                })  # fmt: skip
            case DebitRefused():
                return state.model_copy(update={"settled": state.settled | {event.transfer_id}})
            case AccountCredited():
                return state.model_copy(update={
                    "balance_cents": state.balance_cents + event.amount_cents,
                    "settled": state.settled | {event.transfer_id},
                })  # fmt: skip
            case CreditRefused():
                return state.model_copy(update={"account_id": event.account_id,
                                                "settled": state.settled | {event.transfer_id}})  # fmt: skip
            case DebitRefunded():
                debits = {k: v for k, v in state.debits.items() if k != event.transfer_id}
                return state.model_copy(update={
                    "balance_cents": state.balance_cents + event.amount_cents,
                    "debits": debits,
                    "settled": state.settled | {event.transfer_id},
                })  # fmt: skip
        return state

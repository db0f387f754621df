"""The transfer choreography, tested with Choreo's test kit only: no Kafka, no Ray."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from transfers.aggregates import AccountAggregate, TransferAggregate, TransferStatus
from transfers.invariants import audit
from transfers.messages import (
    AccountDebited,
    AccountOpened,
    Credit,
    Debit,
    DebitRefunded,
    DebitRefused,
    ExpireTransfer,
    LateDebitReturned,
    OpenAccount,
    RecordDebit,
    RecordDebitRefused,
    Refund,
    RequestTransfer,
    TransferDebited,
    TransferExpired,
    TransferRejected,
    TransferRequested,
)
from transfers.policies import ACCOUNT_POLICIES, TRANSFER_POLICIES
from transfers.projections import TransfersProjection
from transfers.workload import TransferMix

from choreography.testing import InMemoryChoreography, InMemoryProjection, given, reactions

T0 = datetime(2024, 1, 1, tzinfo=UTC)
REQUESTED = TransferRequested(transfer_id="t1", from_account="a", to_account="b", amount_cents=500)


def test_a_debit_is_refused_without_funds_and_happens_once() -> None:
    account = AccountAggregate()
    opened = AccountOpened(account_id="a", balance_cents=100)
    given(account, opened).when(Debit(account_id="a", transfer_id="t1", amount_cents=500)).then(
        DebitRefused(account_id="a", transfer_id="t1", reason="insufficient funds")
    )
    debited = AccountDebited(account_id="a", transfer_id="t1", amount_cents=60)
    given(account, opened, debited).when(Debit(account_id="a", transfer_id="t1", amount_cents=60)).then()
    state = given(account, opened, debited).when(Refund(account_id="a", transfer_id="t1")).then(
        DebitRefunded(account_id="a", transfer_id="t1", amount_cents=60)
    )
    assert state.balance_cents == 100
    given(account, opened).when(OpenAccount(account_id="a", balance_cents=1)).then_rejected("already_exists")


def test_a_refused_debit_rejects_the_transfer() -> None:
    given(TransferAggregate(), REQUESTED).when(RecordDebitRefused(transfer_id="t1", reason="insufficient funds")).then(
        TransferRejected(transfer_id="t1", reason="insufficient funds")
    )


def test_a_transfer_expires_only_before_its_debit_and_a_late_debit_is_returned() -> None:
    now = [T0]
    transfer = TransferAggregate(deadline=timedelta(seconds=30), clock=lambda: now[0])
    request = RequestTransfer(transfer_id="t1", from_account="a", to_account="b", amount_cents=500)
    requested = REQUESTED.model_copy(update={"deadline_at": T0 + timedelta(seconds=30)})
    state = given(transfer).when(request).then(requested)
    assert transfer.due_at(state) == T0 + timedelta(seconds=30)
    given(transfer, requested).when(ExpireTransfer(transfer_id="t1")).then_rejected("not_due")
    now[0] = T0 + timedelta(seconds=31)
    expired = given(transfer, requested).when(ExpireTransfer(transfer_id="t1")).then(TransferExpired(transfer_id="t1"))
    assert transfer.is_terminal(expired) and transfer.due_at(expired) is None
    debited = given(transfer, requested).when(RecordDebit(transfer_id="t1")).then(
        TransferDebited(transfer_id="t1", to_account="b", amount_cents=500)
    )
    assert transfer.due_at(debited) is None  # once debited, only the credit's answer ends it
    given(transfer, requested, TransferExpired(transfer_id="t1")).when(RecordDebit(transfer_id="t1")).then(
        LateDebitReturned(transfer_id="t1", from_account="a", amount_cents=500)
    )


def test_policies_debit_the_source_then_credit_the_target() -> None:
    (debit,) = reactions(ACCOUNT_POLICIES, REQUESTED, aggregate_id="t1", event_id="e1", correlation_id="t1")
    assert debit == Debit(account_id="a", transfer_id="t1", amount_cents=500, command_id="e1:0", correlation_id="t1",
                          causation_id="e1")  # fmt: skip
    debited = AccountDebited(account_id="a", transfer_id="t1", amount_cents=500)
    assert reactions(TRANSFER_POLICIES, debited, aggregate_id="a") == [
        RecordDebit(transfer_id="t1", command_id="e-1:0", correlation_id="saga-1", causation_id="e-1")
    ]
    assert not any(isinstance(c, Credit) for c in reactions(TRANSFER_POLICIES, debited, aggregate_id="a"))


def bank(rng: random.Random | None = None) -> InMemoryChoreography:
    services = {"transfer": TransferAggregate(), "account": AccountAggregate()}
    return InMemoryChoreography(services, {"transfer": TRANSFER_POLICIES, "account": ACCOUNT_POLICIES}, rng)


@pytest.mark.parametrize("seed", range(20))
def test_every_interleaving_conserves_money_and_ends_each_transfer_once(seed: int) -> None:
    mix = TransferMix("run", seed=seed, accounts=6, overdrafts=0.2, unknown_targets=0.2)
    bus = bank(random.Random(seed)).send(*mix.setup()).run()
    sagas = [mix.next_saga() for _ in range(40)]
    bus.send(*(c for saga in sagas for c in saga.commands)).run()
    violations, outcomes = audit(bus.log, [s.saga_id for s in sagas])
    assert violations == []
    assert sum(outcomes.values()) == 40
    assert {"TransferCompleted", "TransferRejected", "TransferFailed"} <= set(outcomes)
    statuses = {bus.state("transfer", s.saga_id).status for s in sagas}
    assert TransferStatus.REQUESTED not in statuses and TransferStatus.DEBITED not in statuses


def test_the_audit_catches_money_created_out_of_nothing() -> None:
    mix = TransferMix("run", accounts=2, overdrafts=0, unknown_targets=0)
    bus = bank().send(*mix.setup()).run()
    saga = mix.next_saga()
    bus.send(*saga.commands).run()
    bus.send(Credit(account_id="run-acct-0", transfer_id="forged", amount_cents=1)).run()
    violations, _ = audit(bus.log, [saga.saga_id])
    assert any("money not conserved" in v for v in violations)


def test_the_projection_shows_each_transfer_once_with_its_outcome() -> None:
    mix = TransferMix("run", accounts=4, overdrafts=0.3, unknown_targets=0.3, seed=3)
    bus = bank().send(*mix.setup()).run()
    sagas = [mix.next_saga() for _ in range(12)]
    bus.send(*(c for saga in sagas for c in saga.commands)).run()
    rows = InMemoryProjection(TransfersProjection()).feed(bus.log, batch_size=5).latest("transfers", "transfer_id")
    assert set(rows) == {s.saga_id for s in sagas}
    assert {r["status"] for r in rows.values()} <= {"completed", "rejected", "failed"}

"""Load for `choreo loadtest`: transfers between the run's accounts, some refused for
insufficient funds and some to accounts that do not exist (failed, then refunded)."""

from __future__ import annotations

import random

from choreography.workload import Audit, Saga
from events import Command, StoredEvent
from transfers.invariants import audit
from transfers.messages import OpenAccount, RequestTransfer

OPENING_BALANCE = 100_000


class TransferMix:
    saga_topic = "transfer-events"
    outcomes = {"TransferCompleted": "completed", "TransferRejected": "rejected", "TransferFailed": "failed",
                "TransferExpired": "expired"}  # fmt: skip
    visible_projection = "transfers"
    summary_sql = (
        "SELECT status, count() AS transfers, sum(amount_cents) / 100 AS value, any(reason) AS example_reason "
        "FROM transfers FINAL WHERE startsWith(transfer_id, %(run)s) GROUP BY status ORDER BY transfers DESC"
    )
    """What `choreo demo` prints from ClickHouse after the run."""

    def __init__(
        self, run: str, seed: int = 1, accounts: int = 50, overdrafts: float = 0.1, unknown_targets: float = 0.05
    ) -> None:
        if accounts < 2:
            raise ValueError(f"accounts must be at least 2, got {accounts}")
        self.run, self.rng = run, random.Random(seed)
        self.accounts = [f"{run}-acct-{i}" for i in range(accounts)]
        self.overdrafts, self.unknown_targets = overdrafts, unknown_targets
        self.count = 0

    def setup(self) -> list[Command]:
        return [OpenAccount(account_id=a, balance_cents=OPENING_BALANCE) for a in self.accounts]

    def next_saga(self) -> Saga:
        rng = self.rng
        source, target = rng.sample(self.accounts, 2)
        if rng.random() < self.unknown_targets:
            target = f"{self.run}-ghost-{rng.randrange(10)}"
        amount = OPENING_BALANCE * 10 if rng.random() < self.overdrafts else rng.randint(1, 2_000)
        transfer_id = f"{self.run}-t{self.count}"
        self.count += 1
        return Saga(transfer_id, [RequestTransfer(transfer_id=transfer_id, from_account=source, to_account=target,
                                                  amount_cents=amount)])  # fmt: skip

    def audit(self, events: list[StoredEvent], saga_ids: list[str]) -> Audit:
        violations, outcomes = audit(events, saga_ids)
        return Audit(violations=violations, figures={"outcomes": dict(outcomes)})

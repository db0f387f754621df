"""`transfers`: one current row per transfer (ReplacingMergeTree by version; query with FINAL)."""

from __future__ import annotations

from typing import Any

from events import StoredEvent
from projections import POSITION_DDL, RowPerKey, Table
from transfers.messages import TransferFailed, TransferRejected, TransferRequested

STATUS = {
    "TransferRequested": "requested",
    "TransferDebited": "debited",
    "TransferCompleted": "completed",
    "TransferRejected": "rejected",
    "TransferFailed": "failed",
    "TransferExpired": "expired",
}


class TransfersProjection(RowPerKey):
    name = "transfers"
    topics = ("transfer-events",)
    key = "transfer_id"
    table = Table(
        name="transfers",
        columns=("transfer_id", "from_account", "to_account", "amount_cents", "status", "reason", "version",
                 "requested_at", "updated_at"),
        ddl=f"""
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id String, from_account String, to_account String, amount_cents Int64,
    status LowCardinality(String), reason String, version UInt32,
    requested_at DateTime64(6, 'UTC'), updated_at DateTime64(6, 'UTC'), {POSITION_DDL}
) ENGINE = ReplacingMergeTree(version) ORDER BY transfer_id""",
    )  # fmt: skip

    def key_of(self, event: StoredEvent) -> str | None:
        return event.aggregate_id if event.envelope.event_type in STATUS else None

    def apply(self, row: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
        env, payload = event.envelope, event.payload
        if isinstance(payload, TransferRequested):
            row = {"transfer_id": payload.transfer_id, "from_account": payload.from_account,
                   "to_account": payload.to_account, "amount_cents": payload.amount_cents, "reason": "",
                   "requested_at": env.occurred_at}  # fmt: skip
        elif row is None:
            return None
        else:
            row = dict(row)
        if isinstance(payload, TransferRejected | TransferFailed):
            row["reason"] = payload.reason
        row.update(status=STATUS[env.event_type], version=env.version, updated_at=env.occurred_at)
        return row

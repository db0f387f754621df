"""The Shipment aggregate (keyed by order id): scheduled once, or failed, or called off."""

from __future__ import annotations

from enum import StrEnum

from actors.aggregate import DomainError
from events.base import Command, DomainModel, Event
from shop.messages.shipping import (
    SHIPPING,
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)

UNDELIVERABLE = "nowhere"
"""Addresses containing this word fail, as a carrier's address validation would."""


class ShipmentStatus(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ShipmentState(DomainModel):
    order_id: str = ""
    status: ShipmentStatus = ShipmentStatus.NONE
    tracking_id: str = ""


class ShipmentAggregate:
    aggregate_type = SHIPPING
    state_type = ShipmentState
    benign_rejections: frozenset[str] = frozenset()
    """None: late and repeated answers from other services decide to no events, not to a rejection."""

    def initial(self) -> ShipmentState:
        return ShipmentState()

    def decide(self, state: ShipmentState, command: Command) -> list[Event]:
        match command:
            case ScheduleShipment():
                if state.status is not ShipmentStatus.NONE:
                    return []
                if UNDELIVERABLE in command.address.lower():
                    return [ShipmentFailed(order_id=command.order_id, reason="address undeliverable")]
                return [
                    ShipmentScheduled(
                        order_id=command.order_id, tracking_id=f"TRK-{command.order_id}",
                        address=command.address,
                    )
                ]  # fmt: skip
            case CancelShipment():
                if state.status is not ShipmentStatus.SCHEDULED:
                    return []
                return [ShipmentCancelled(order_id=command.order_id, reason=command.reason)]
        raise DomainError("unsupported", f"shipping cannot handle {command.type_name()}")

    def evolve(self, state: ShipmentState, event: Event) -> ShipmentState:
        match event:
            case ShipmentScheduled():
                return ShipmentState(
                    order_id=event.order_id, status=ShipmentStatus.SCHEDULED,
                    tracking_id=event.tracking_id,
                )  # fmt: skip
            case ShipmentFailed():
                return ShipmentState(order_id=event.order_id, status=ShipmentStatus.FAILED)
            case ShipmentCancelled():
                return state.model_copy(update={"status": ShipmentStatus.CANCELLED})
        return state

"""Commands and events of the shipping service (aggregate: Shipment, keyed by order id)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from events.base import Command, Event

SHIPPING = "shipping"


class ScheduleShipment(Command):
    target: ClassVar[str] = SHIPPING
    order_id: str = Field(min_length=1, max_length=64)
    address: str
    items: int = Field(ge=1)

    @property
    def aggregate_id(self) -> str:
        return self.order_id


class CancelShipment(Command):
    target: ClassVar[str] = SHIPPING
    order_id: str = Field(min_length=1, max_length=64)
    reason: str = ""

    @property
    def aggregate_id(self) -> str:
        return self.order_id


class ShipmentEvent(Event):
    aggregate_type: ClassVar[str] = SHIPPING
    order_id: str


class ShipmentScheduled(ShipmentEvent):
    tracking_id: str
    address: str


class ShipmentFailed(ShipmentEvent):
    reason: str


class ShipmentCancelled(ShipmentEvent):
    reason: str


SHIPPING_COMMANDS: tuple[type[Command], ...] = (ScheduleShipment, CancelShipment)
SHIPPING_EVENTS: tuple[type[Event], ...] = (ShipmentScheduled, ShipmentFailed, ShipmentCancelled)

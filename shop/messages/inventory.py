"""Commands and events of the inventory service (aggregate: StockItem, keyed by SKU)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from events.base import Command, Event

INVENTORY = "inventory"


class StockCommand(Command):
    target: ClassVar[str] = INVENTORY
    sku: str = Field(min_length=1, max_length=64)

    @property
    def aggregate_id(self) -> str:
        return self.sku


MAX_STOCK_QUANTITY = 100_000_000
"""Per command; `added` sums them, so 9 * 10**10 commands per SKU still fit in Int64."""


class AddStock(StockCommand):
    quantity: int = Field(gt=0, le=MAX_STOCK_QUANTITY)


class ReserveStock(StockCommand):
    order_id: str
    quantity: int = Field(gt=0, le=MAX_STOCK_QUANTITY)


class ReleaseStock(StockCommand):
    order_id: str


class ShipStock(StockCommand):
    order_id: str


class StockEvent(Event):
    aggregate_type: ClassVar[str] = INVENTORY
    sku: str


class StockAdded(StockEvent):
    quantity: int


class StockReserved(StockEvent):
    order_id: str
    quantity: int


class StockReservationRejected(StockEvent):
    order_id: str
    quantity: int
    reason: str


class StockReleased(StockEvent):
    order_id: str
    quantity: int


class StockShipped(StockEvent):
    order_id: str
    quantity: int


INVENTORY_COMMANDS: tuple[type[Command], ...] = (AddStock, ReserveStock, ReleaseStock, ShipStock)
INVENTORY_EVENTS: tuple[type[Event], ...] = (
    StockAdded, StockReserved, StockReservationRejected, StockReleased, StockShipped,
)  # fmt: skip

"""Commands and events of the order service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from events.base import Command, DomainModel, Event

ORDER = "order"


class OrderLine(DomainModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=10_000)
    unit_price_cents: int = Field(ge=0)


# ---- commands -------------------------------------------------------------------


class PlaceOrder(Command):
    target: ClassVar[str] = ORDER
    order_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    lines: tuple[OrderLine, ...] = Field(min_length=1, max_length=100)

    @field_validator("lines")
    @classmethod
    def _distinct_skus(cls, lines: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise ValueError("each SKU may appear on only one line")
        return lines

    @property
    def aggregate_id(self) -> str:
        return self.order_id


class CancelOrder(Command):
    target: ClassVar[str] = ORDER
    order_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="customer request", max_length=200)

    @property
    def aggregate_id(self) -> str:
        return self.order_id


# ---- events ---------------------------------------------------------------------


class OrderPlaced(Event):
    aggregate_type: ClassVar[str] = ORDER
    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    total_cents: int


class OrderCancelled(Event):
    aggregate_type: ClassVar[str] = ORDER
    order_id: str
    reason: str


ORDER_COMMANDS: tuple[type[Command], ...] = (PlaceOrder, CancelOrder)
ORDER_EVENTS: tuple[type[Event], ...] = (OrderPlaced, OrderCancelled)

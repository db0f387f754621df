"""Aggregates (pure domain logic) and the Ray shard actors that host them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from actors.aggregate import Aggregate, DomainError
from actors.inventory import StockItemAggregate
from actors.order import OrderAggregate, OrderState, OrderStatus
from actors.payment import PaymentAggregate
from actors.shipping import ShipmentAggregate

SERVICES = ("order", "inventory", "payment", "shipping")


def aggregate_for(service: str, deadline_s: float | None = None) -> Aggregate[Any]:
    """The pure aggregate a service hosts. Only orders have a deadline."""
    if service == "order":
        return OrderAggregate(deadline=timedelta(seconds=deadline_s) if deadline_s else None)
    if service == "inventory":
        return StockItemAggregate()
    if service == "payment":
        return PaymentAggregate()
    if service == "shipping":
        return ShipmentAggregate()
    raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")


__all__ = [
    "SERVICES",
    "Aggregate",
    "DomainError",
    "OrderAggregate",
    "OrderState",
    "OrderStatus",
    "aggregate_for",
]

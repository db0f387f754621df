"""Aggregates (pure domain logic) and the Ray shard actors that host them."""

from __future__ import annotations

from typing import Any

from actors.aggregate import Aggregate, DomainError
from actors.order import OrderAggregate, OrderState, OrderStatus

AGGREGATES: dict[str, Aggregate[Any]] = {"order": OrderAggregate()}


def aggregate_for(service: str) -> Aggregate[Any]:
    try:
        return AGGREGATES[service]
    except KeyError:
        raise ValueError(f"unknown service {service!r}; known: {sorted(AGGREGATES)}") from None


__all__ = [
    "AGGREGATES",
    "Aggregate",
    "DomainError",
    "OrderAggregate",
    "OrderState",
    "OrderStatus",
    "aggregate_for",
]

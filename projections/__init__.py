"""Read side: projection definitions (DDL + events -> rows), the ClickHouse sink and runners."""

from __future__ import annotations

from projections.base import Projection, Table
from projections.events_raw import EventsRawProjection
from projections.orders import OrdersProjection

PROJECTIONS: dict[str, type[Projection]] = {
    "orders": OrdersProjection,
    "events_raw": EventsRawProjection,
}


def projection_for(name: str) -> Projection:
    try:
        return PROJECTIONS[name]()
    except KeyError:
        raise ValueError(f"unknown projection {name!r}; known: {sorted(PROJECTIONS)}") from None


__all__ = ["PROJECTIONS", "Projection", "Table", "projection_for"]

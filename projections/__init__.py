"""Read side: projection definitions (DDL + events -> rows), the ClickHouse sink and runners."""

from __future__ import annotations

from projections.base import Projection, Table
from projections.events_raw import EventsRawProjection
from projections.inventory import InventoryLevelsProjection
from projections.orders import (
    CustomerOrdersProjection,
    OrderLinesProjection,
    OrdersProjection,
    SagaOutcomesProjection,
)
from projections.sales import SalesProjection

PROJECTIONS: dict[str, type[Projection]] = {
    p.name: p
    for p in (
        OrdersProjection,
        OrderLinesProjection,
        CustomerOrdersProjection,
        SalesProjection,
        SagaOutcomesProjection,
        InventoryLevelsProjection,
        EventsRawProjection,
    )
}


def projection_for(name: str) -> Projection:
    try:
        return PROJECTIONS[name]()
    except KeyError:
        raise ValueError(f"unknown projection {name!r}; known: {sorted(PROJECTIONS)}") from None


__all__ = ["PROJECTIONS", "Projection", "Table", "projection_for"]

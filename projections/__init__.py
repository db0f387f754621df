"""Read side: the projection contract (DDL + events -> rows), the ClickHouse sink, runners and
host actors. Projections themselves are declared in cluster.yaml by import path."""

from __future__ import annotations

from projections.base import POSITION_DDL, Lookup, Projection, Row, RowPerKey, Table, View, position

__all__ = ["POSITION_DDL", "Lookup", "Projection", "Row", "RowPerKey", "Table", "View", "position"]

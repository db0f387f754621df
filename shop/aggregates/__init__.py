"""The shop's aggregates: pure state machines, one per service, named in cluster.yaml."""

from __future__ import annotations

from shop.aggregates.inventory import StockItemAggregate
from shop.aggregates.order import OrderAggregate, OrderState, OrderStatus
from shop.aggregates.payment import PaymentAggregate
from shop.aggregates.shipping import ShipmentAggregate

__all__ = ["OrderAggregate", "OrderState", "OrderStatus", "PaymentAggregate", "ShipmentAggregate", "StockItemAggregate"]

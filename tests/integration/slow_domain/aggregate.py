"""The shop's inventory aggregate, declared from this package."""

from shop.aggregates.inventory import StockItemAggregate as InventoryAggregate
from tests.integration.slow_domain.messages import Restock

__all__ = ["InventoryAggregate", "Restock"]

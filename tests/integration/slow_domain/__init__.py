"""A declared domain whose package takes a while to import, as a large one does. Like `shop`, its
`__init__` imports its submodules, and one submodule imports another."""

import time

time.sleep(3.0)

from tests.integration.slow_domain.aggregate import InventoryAggregate  # noqa: E402
from tests.integration.slow_domain.messages import MESSAGES, Restock  # noqa: E402

__all__ = ["MESSAGES", "InventoryAggregate", "Restock"]

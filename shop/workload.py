"""The shop's load: orders of one run with a configurable mix of stock-outs, declined cards,
failed shipments and customer cancels, and the audit of the shop's invariants."""

from __future__ import annotations

import random
from typing import Any

from choreography.workload import Audit, Saga
from events.base import Command, StoredEvent
from shop.invariants import audit
from shop.messages import AddStock, CancelOrder, OrderLine, PlaceOrder
from shop.messages.orders import OUTCOMES


class OrderMix:
    """Orders of one run, on the run's own SKUs (plenty of stock, plus one scarce SKU).

    Mix options (`choreo loadtest --mix KEY=VALUE`): lines per order, and the shares of orders
    that ask for the scarce SKU (stockouts), whose card is declined (declines), whose address is
    undeliverable (ship_failures) and that the customer cancels right away (cancels)."""

    saga_topic = "order-events"
    outcomes = OUTCOMES
    visible_projection = "saga_outcomes"
    summary_sql = (
        "SELECT status, count() AS orders, sum(total_cents) / 100 AS value, round(avg(line_count), 2) AS avg_lines, "
        "any(reason) AS example_reason FROM orders FINAL WHERE startsWith(order_id, %(run)s) "
        "GROUP BY status ORDER BY orders DESC"
    )
    """What `choreo demo` prints from ClickHouse after the run (`%(run)s` is the run's id prefix)."""

    def __init__(
        self,
        run: str,
        seed: int = 1,
        lines: int = 2,
        stockouts: float = 0.10,
        declines: float = 0.10,
        ship_failures: float = 0.05,
        cancels: float = 0.05,
        skus: int = 200,
    ) -> None:
        if not 1 <= lines <= skus:
            raise ValueError(f"lines must be between 1 and {skus}, got {lines}")
        for name, share in (("stockouts", stockouts), ("declines", declines), ("ship_failures", ship_failures),
                            ("cancels", cancels)):  # fmt: skip
            if not 0 <= share <= 1:
                raise ValueError(f"{name} is a share between 0 and 1, got {share}")
        self.run = run
        self.rng = random.Random(seed)
        self.lines, self.stockouts, self.declines = lines, stockouts, declines
        self.ship_failures, self.cancels = ship_failures, cancels
        self.skus = [f"{run}-sku-{i}" for i in range(skus)]
        self.scarce = f"{run}-sku-scarce"
        self.count = 0

    def setup(self) -> list[Command]:
        adds: list[Command] = [AddStock(sku=s, quantity=10_000_000) for s in self.skus]
        return [*adds, AddStock(sku=self.scarce, quantity=1)]

    def next_order(self) -> tuple[PlaceOrder, bool]:
        """The next order, and whether its customer cancels it."""
        rng = self.rng
        skus = rng.sample(self.skus, self.lines)
        if rng.random() < self.stockouts:
            skus[0] = self.scarce
        roll = rng.random()
        undeliverable = self.declines <= roll < self.declines + self.ship_failures
        order = PlaceOrder(
            order_id=f"{self.run}-{self.count}",
            customer_id=f"{self.run}-c{rng.randrange(10_000)}",
            lines=tuple(
                OrderLine(sku=s, quantity=rng.randint(1, 3), unit_price_cents=rng.randint(100, 9000)) for s in skus
            ),
            payment_token="tok_chargeDeclined" if roll < self.declines else "tok_visa",
            shipping_address="Nowhere 0" if undeliverable else "1 Main St",
        )
        self.count += 1
        return order, rng.random() < self.cancels

    def next_saga(self) -> Saga:
        order, cancel = self.next_order()
        commands: list[Command] = [order, CancelOrder(order_id=order.order_id)] if cancel else [order]
        return Saga(order.order_id, commands)

    def audit(self, events: list[StoredEvent], saga_ids: list[str]) -> Audit:
        result = audit(events, order_ids=saga_ids, skus=[*self.skus, self.scarce])
        figures: dict[str, Any] = {
            "captured_cents": result.captured_cents,
            "refunded_cents": result.refunded_cents,
            "confirmed_cents": result.confirmed_cents,
        }
        return Audit(violations=list(result.violations), figures=figures)

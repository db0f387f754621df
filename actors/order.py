"""The Order aggregate: pure decide/evolve, no I/O."""

from __future__ import annotations

from enum import StrEnum

from actors.aggregate import DomainError
from events.base import Command, DomainModel, Event
from events.orders import (
    ORDER,
    CancelOrder,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PlaceOrder,
)


class OrderStatus(StrEnum):
    NEW = "new"
    PLACED = "placed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({OrderStatus.CANCELLED})


class OrderState(DomainModel):
    order_id: str = ""
    customer_id: str = ""
    status: OrderStatus = OrderStatus.NEW
    lines: tuple[OrderLine, ...] = ()
    total_cents: int = 0
    reason: str = ""


class OrderAggregate:
    aggregate_type = ORDER
    state_type = OrderState

    def initial(self) -> OrderState:
        return OrderState()

    def decide(self, state: OrderState, command: Command) -> list[Event]:
        if isinstance(command, PlaceOrder):
            if state.status is not OrderStatus.NEW:
                raise DomainError("already_exists", f"order {command.order_id} already exists")
            total = sum(line.quantity * line.unit_price_cents for line in command.lines)
            return [
                OrderPlaced(
                    order_id=command.order_id,
                    customer_id=command.customer_id,
                    lines=command.lines,
                    total_cents=total,
                )
            ]
        if isinstance(command, CancelOrder):
            if state.status is OrderStatus.NEW:
                raise DomainError("not_found", f"order {command.order_id} does not exist")
            if state.status in TERMINAL:
                raise DomainError(
                    "invalid_state",
                    f"order {command.order_id} is already {state.status.value}",
                )
            return [OrderCancelled(order_id=command.order_id, reason=command.reason)]
        raise DomainError("unsupported", f"order cannot handle {command.type_name()}")

    def evolve(self, state: OrderState, event: Event) -> OrderState:
        if isinstance(event, OrderPlaced):
            return OrderState(
                order_id=event.order_id,
                customer_id=event.customer_id,
                status=OrderStatus.PLACED,
                lines=event.lines,
                total_cents=event.total_cents,
            )
        if isinstance(event, OrderCancelled):
            return state.model_copy(update={"status": OrderStatus.CANCELLED, "reason": event.reason})
        return state

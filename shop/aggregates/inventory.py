"""The StockItem aggregate (keyed by SKU): never negative, every unit accounted for."""

from __future__ import annotations

from actors.aggregate import DomainError
from events.base import Command, DomainModel, Event
from shop.messages.inventory import (
    INVENTORY,
    AddStock,
    ReleaseStock,
    ReserveStock,
    ShipStock,
    StockAdded,
    StockReleased,
    StockReservationRejected,
    StockReserved,
    StockShipped,
)


class StockState(DomainModel):
    sku: str = ""
    added: int = 0
    available: int = 0
    reserved: dict[str, int] = {}
    """Quantity held per order id."""
    shipped: int = 0
    settled: tuple[str, ...] = ()
    """The most recent orders answered and done with (refused, released or shipped), oldest
    first: a late duplicate ReserveStock must not reserve for them again. Bounded to
    SETTLED_MEMORY so state and snapshots stay small on a long-lived SKU; a reservation arriving
    for an order settled longer ago is answered normally, and the order side hands it back
    (StrayReservationReleased), so stock still balances."""

    @property
    def reserved_total(self) -> int:
        return sum(self.reserved.values())


SETTLED_MEMORY = 1_000
"""Settled orders remembered per SKU."""


def _settle(settled: tuple[str, ...], order_id: str) -> tuple[str, ...]:
    return (*settled, order_id)[-SETTLED_MEMORY:]


class StockItemAggregate:
    aggregate_type = INVENTORY
    state_type = StockState
    benign_rejections: frozenset[str] = frozenset()
    """None: late and repeated answers from other services decide to no events, not to a rejection."""

    def initial(self) -> StockState:
        return StockState()

    def decide(self, state: StockState, command: Command) -> list[Event]:
        match command:
            case AddStock():
                return [StockAdded(sku=command.sku, quantity=command.quantity)]
            case ReserveStock():
                oid = command.order_id
                if oid in state.reserved or oid in state.settled:
                    return []
                if state.added == 0:
                    reason = "unknown SKU"
                elif command.quantity > state.available:
                    reason = f"insufficient stock: {state.available} available, {command.quantity} requested"
                else:
                    return [StockReserved(sku=command.sku, order_id=oid, quantity=command.quantity)]
                return [
                    StockReservationRejected(sku=command.sku, order_id=oid, quantity=command.quantity, reason=reason)
                ]
            case ReleaseStock():
                held = state.reserved.get(command.order_id)
                if held is None:
                    return []
                return [StockReleased(sku=command.sku, order_id=command.order_id, quantity=held)]
            case ShipStock():
                held = state.reserved.get(command.order_id)
                if held is None:
                    if command.order_id in state.settled:
                        return []
                    raise DomainError("not_reserved", f"{command.sku} holds nothing for {command.order_id}")
                return [StockShipped(sku=command.sku, order_id=command.order_id, quantity=held)]
        raise DomainError("unsupported", f"inventory cannot handle {command.type_name()}")

    def evolve(self, state: StockState, event: Event) -> StockState:
        match event:
            case StockAdded():
                return state.model_copy(
                    update={
                        "sku": event.sku,
                        "added": state.added + event.quantity,
                        "available": state.available + event.quantity,
                    }
                )
            case StockReserved():
                return state.model_copy(
                    update={
                        "available": state.available - event.quantity,
                        "reserved": {**state.reserved, event.order_id: event.quantity},
                    }
                )
            case StockReservationRejected():
                return state.model_copy(update={"settled": _settle(state.settled, event.order_id)})
            case StockReleased():
                return state.model_copy(
                    update={
                        "available": state.available + event.quantity,
                        "reserved": _without(state.reserved, event.order_id),
                        "settled": _settle(state.settled, event.order_id),
                    }
                )
            case StockShipped():
                return state.model_copy(
                    update={
                        "shipped": state.shipped + event.quantity,
                        "reserved": _without(state.reserved, event.order_id),
                        "settled": _settle(state.settled, event.order_id),
                    }
                )
        return state


def _without(held: dict[str, int], order_id: str) -> dict[str, int]:
    return {k: v for k, v in held.items() if k != order_id}

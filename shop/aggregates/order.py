"""The Order aggregate: the order's side of the saga as a pure state machine, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from actors.aggregate import DomainError
from events.base import Command, DomainModel, Event, utc_now
from shop.messages.orders import (
    DEFAULT_CURRENCY,
    ORDER,
    OUTCOMES,
    CancelOrder,
    ExpireOrder,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderLineRejected,
    OrderLineReserved,
    OrderPaid,
    OrderPaymentRequested,
    OrderPlaced,
    OrderRejected,
    PlaceOrder,
    RecordPaymentCaptured,
    RecordPaymentDeclined,
    RecordShipmentFailed,
    RecordShipmentScheduled,
    RecordStockRejected,
    RecordStockReserved,
    StrayPaymentRefunded,
    StrayReservationReleased,
    StrayShipmentCancelled,
)


class OrderStatus(StrEnum):
    NEW = "new"
    RESERVING = "reserving"
    PAYING = "paying"
    SHIPPING = "shipping"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


TERMINAL = frozenset(OrderStatus(status) for status in OUTCOMES.values())


class OrderState(DomainModel):
    order_id: str = ""
    customer_id: str = ""
    status: OrderStatus = OrderStatus.NEW
    lines: tuple[OrderLine, ...] = ()
    total_cents: int = 0
    payment_token: str = ""
    shipping_address: str = ""
    currency: str = DEFAULT_CURRENCY
    deadline_at: datetime | None = None
    reserved: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    paid: bool = False
    paid_cents: int = 0
    refunded: bool = False
    tracking_id: str = ""
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def skus(self) -> tuple[str, ...]:
        return tuple(line.sku for line in self.lines)


class OrderAggregate:
    aggregate_type = ORDER
    state_type = OrderState
    benign_rejections: frozenset[str] = frozenset()
    """None: late and repeated answers from other services decide to no events, not to a rejection."""

    def __init__(self, deadline: timedelta | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        self.deadline = deadline
        self.clock = clock

    def initial(self) -> OrderState:
        return OrderState()

    # ---- deadlines (the shard asks these to schedule ExpireOrder) -------------------

    def is_terminal(self, state: OrderState) -> bool:
        return state.terminal

    def due_at(self, state: OrderState) -> datetime | None:
        return None if state.terminal else state.deadline_at

    def expire(self, aggregate_id: str) -> ExpireOrder:
        return ExpireOrder(order_id=aggregate_id, command_id=f"expire:{aggregate_id}")

    # ---- decide ---------------------------------------------------------------------

    def decide(self, state: OrderState, command: Command) -> list[Event]:
        if isinstance(command, PlaceOrder):
            return self._place(state, command)
        if state.status is OrderStatus.NEW:
            raise DomainError("not_found", f"order {command.aggregate_id} does not exist")
        oid = state.order_id
        match command:
            case CancelOrder():
                if state.terminal:
                    raise DomainError("invalid_state", f"order {oid} is already {state.status}")
                if state.status is OrderStatus.SHIPPING:
                    raise DomainError("invalid_state", f"order {oid} is already being shipped")
                return [self._cancel(state, command.reason)]
            case ExpireOrder():
                if state.terminal:
                    raise DomainError("invalid_state", f"order {oid} is already {state.status}")
                if state.deadline_at is None or self.clock() < state.deadline_at:
                    raise DomainError("not_due", f"order {oid} has not reached its deadline")
                return [self._cancel(state, "deadline exceeded")]
            case RecordStockReserved():
                return self._stock_reserved(state, command.sku)
            case RecordStockRejected():
                return self._stock_rejected(state, command.sku, command.reason)
            case RecordPaymentCaptured():
                if state.status is OrderStatus.PAYING:
                    return [
                        OrderPaid(
                            order_id=oid, amount_cents=command.amount_cents,
                            shipping_address=state.shipping_address, lines=state.lines,
                        )
                    ]  # fmt: skip
                if state.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED) and not (state.paid or state.refunded):
                    return [StrayPaymentRefunded(order_id=oid, amount_cents=command.amount_cents)]
                return []
            case RecordPaymentDeclined():
                if state.status is OrderStatus.PAYING:
                    return [self._cancel(state, f"payment declined: {command.reason}")]
                return []
            case RecordShipmentScheduled():
                if state.status is OrderStatus.SHIPPING:
                    return [OrderConfirmed(order_id=oid, tracking_id=command.tracking_id, skus=state.skus)]
                if state.status is OrderStatus.CANCELLED and not state.tracking_id:
                    return [StrayShipmentCancelled(order_id=oid)]
                return []
            case RecordShipmentFailed():
                if state.status is OrderStatus.SHIPPING:
                    return [self._cancel(state, f"shipment failed: {command.reason}")]
                return []
        raise DomainError("unsupported", f"order cannot handle {command.type_name()}")

    def _place(self, state: OrderState, command: PlaceOrder) -> list[Event]:
        if state.status is not OrderStatus.NEW:
            raise DomainError("already_exists", f"order {command.order_id} already exists")
        return [
            OrderPlaced(
                order_id=command.order_id,
                customer_id=command.customer_id,
                lines=command.lines,
                total_cents=sum(line.quantity * line.unit_price_cents for line in command.lines),
                payment_token=command.payment_token,
                ship_to=command.shipping_address,
                currency=command.currency,
                deadline_at=self.clock() + self.deadline if self.deadline else None,
            )
        ]

    def _cancel(self, state: OrderState, reason: str) -> OrderCancelled:
        return OrderCancelled(
            order_id=state.order_id,
            reason=reason,
            release_skus=state.reserved,
            refund=state.paid and not state.refunded,
        )

    def _stock_reserved(self, state: OrderState, sku: str) -> list[Event]:
        oid = state.order_id
        if sku not in state.skus:
            raise DomainError("unknown_line", f"order {oid} has no line for {sku}")
        if sku in state.reserved:
            return []
        if state.status is not OrderStatus.RESERVING or sku in state.rejected:
            # The order ended, or this line was already refused: hand the stock back.
            return [StrayReservationReleased(order_id=oid, sku=sku)]
        events: list[Event] = [OrderLineReserved(order_id=oid, sku=sku)]
        reserved = (*state.reserved, sku)
        if _all_answered(state, reserved, state.rejected):
            events.append(self._resolve(state, reserved, state.rejected))
        return events

    def _stock_rejected(self, state: OrderState, sku: str, reason: str) -> list[Event]:
        oid = state.order_id
        if sku not in state.skus:
            raise DomainError("unknown_line", f"order {oid} has no line for {sku}")
        if state.status is not OrderStatus.RESERVING or sku in state.rejected or sku in state.reserved:
            return []
        events: list[Event] = [OrderLineRejected(order_id=oid, sku=sku, reason=reason)]
        rejected = (*state.rejected, sku)
        if _all_answered(state, state.reserved, rejected):
            events.append(self._resolve(state, state.reserved, rejected, reason))
        return events

    def _resolve(
        self,
        state: OrderState,
        reserved: tuple[str, ...],
        rejected: tuple[str, ...],
        last_reason: str = "",
    ) -> Event:
        if rejected:
            detail = f" ({last_reason})" if last_reason else ""
            return OrderRejected(
                order_id=state.order_id,
                reason=f"stock rejected for {', '.join(rejected)}{detail}",
                release_skus=reserved,
            )
        return OrderPaymentRequested(
            order_id=state.order_id,
            customer_id=state.customer_id,
            amount_cents=state.total_cents,
            payment_token=state.payment_token,
        )

    # ---- evolve ---------------------------------------------------------------------

    def evolve(self, state: OrderState, event: Event) -> OrderState:
        match event:
            case OrderPlaced():
                return OrderState(
                    order_id=event.order_id,
                    customer_id=event.customer_id,
                    status=OrderStatus.RESERVING,
                    lines=event.lines,
                    total_cents=event.total_cents,
                    payment_token=event.payment_token,
                    shipping_address=event.ship_to,
                    currency=event.currency,
                    deadline_at=event.deadline_at,
                )
            case OrderLineReserved():
                return state.model_copy(update={"reserved": (*state.reserved, event.sku)})
            case OrderLineRejected():
                return state.model_copy(update={"rejected": (*state.rejected, event.sku)})
            case OrderPaymentRequested():
                return state.model_copy(update={"status": OrderStatus.PAYING})
            case OrderPaid():
                return state.model_copy(
                    update={"status": OrderStatus.SHIPPING, "paid": True, "paid_cents": event.amount_cents}
                )
            case OrderConfirmed():
                return state.model_copy(update={"status": OrderStatus.CONFIRMED, "tracking_id": event.tracking_id})
            case OrderRejected():
                return state.model_copy(update={"status": OrderStatus.REJECTED, "reason": event.reason})
            case OrderCancelled():
                return state.model_copy(
                    update={
                        "status": OrderStatus.CANCELLED,
                        "reason": event.reason,
                        "refunded": state.refunded or event.refund,
                    }
                )
            case StrayPaymentRefunded():
                return state.model_copy(update={"refunded": True})
            case StrayReservationReleased():
                return state.model_copy(update={"reserved": (*state.reserved, event.sku)})
            case StrayShipmentCancelled():
                return state.model_copy(update={"tracking_id": "cancelled"})
        return state


def _all_answered(state: OrderState, reserved: tuple[str, ...], rejected: tuple[str, ...]) -> bool:
    """Every line has had its reservation answered, one way or the other."""
    return set(state.skus) <= set(reserved) | set(rejected)

"""A client command resubmitted with the same id has exactly one effect, whatever happened in
between (restarts, snapshots, any number of other commands), and its caller gets the original
outcome back."""

from __future__ import annotations

import uuid

from actors.outcomes import Accepted, Rejected
from actors.shard import Shard
from choreography.config import Settings
from choreography.system import shard_config
from choreography.topology import ensure_topics
from shop.messages import registry as shop_registry
from shop.messages.inventory import AddStock
from shop.messages.orders import CancelOrder, OrderLine, PlaceOrder

LINE = (OrderLine(sku="A", quantity=1, unit_price_cents=3),)


def _shard(settings: Settings, service: str) -> Shard:
    return Shard(shard_config(settings, service, 0), settings.aggregate(service), shop_registry())


def test_resubmits_after_restarts_snapshots_and_many_commands_have_one_effect(make_settings) -> None:
    settings = make_settings(shards=1, partitions=2, snapshot_every=5)
    services = {
        name: spec.model_copy(update={"shards": 1, "snapshot_every": 5}) for name, spec in settings.services.items()
    }
    settings = settings.model_copy(update={"services": services})
    ensure_topics(settings)
    run = uuid.uuid4().hex[:6]

    stock = _shard(settings, "inventory")
    retried = AddStock(sku=f"{run}-sku", quantity=100)
    assert stock.handle([retried])[0].ok
    for _ in range(40):  # more than any per-aggregate memory, and past several snapshots
        assert stock.handle([AddStock(sku=f"{run}-sku", quantity=1)])[0].ok
    stock.close()

    orders = _shard(settings, "order")
    place = PlaceOrder(order_id=f"{run}-o", customer_id="c", lines=LINE)
    early_cancel = CancelOrder(order_id=f"{run}-later")  # refused: that order does not exist yet
    first_place, first_cancel = orders.handle([place, early_cancel])
    assert isinstance(first_place, Accepted) and isinstance(first_cancel, Rejected)
    assert first_cancel.code == "not_found"
    orders.handle([PlaceOrder(order_id=f"{run}-later", customer_id="c", lines=LINE)])
    orders.handle([PlaceOrder(order_id=f"{run}-filler-{i}", customer_id="c", lines=LINE) for i in range(30)])
    orders.close()

    stock = _shard(settings, "inventory")  # a restart: rehydrated from a snapshot plus the tail
    assert stock.stats.from_checkpoint, "it rehydrated from a snapshot checkpoint"
    again = stock.handle([retried])[0]
    assert isinstance(again, Accepted) and again.duplicate
    state, _ = stock.state(f"{run}-sku")
    assert state.added == 140, "the retried AddStock(100) was applied twice"
    stock.close()

    orders = _shard(settings, "order")
    replace, recancel = orders.handle([place, early_cancel])
    assert isinstance(replace, Accepted) and replace.duplicate, replace
    assert [e.envelope.event_id for e in replace.events] == [e.envelope.event_id for e in first_place.events]
    assert isinstance(recancel, Rejected) and recancel.duplicate, recancel
    assert (recancel.code, recancel.reason) == (first_cancel.code, first_cancel.reason)
    assert orders.state(f"{run}-later")[0].status.value == "reserving", "the old cancel took effect on a new order"
    orders.close()

"""A policy that sends a command to a service nobody declared is a policy bug like any other: the
event that triggered it is dead-lettered with the reason, and the runner goes on."""

from __future__ import annotations

from typing import ClassVar

from choreography.policies import Meta, On
from choreography.policy_runner import PolicyRunner
from choreography.system import runner_config
from choreography.topology import ensure_topics
from events import Command
from events.log.dlq import read_dead_letters
from shop.messages.inventory import StockAdded
from tests.integration.workload import append_stock_added, poll_until


class Haunt(Command):
    target: ClassVar[str] = "ghost"
    sku: str

    @property
    def aggregate_id(self) -> str:
        return self.sku


def haunt(event: StockAdded, meta: Meta) -> list[Command]:
    return [Haunt(sku=event.sku, **meta.ids(0))] if event.sku.startswith("haunted") else []


WIRING = [On(StockAdded, haunt)]


def test_a_command_for_an_undeclared_service_dead_letters_its_event(make_settings) -> None:
    settings = make_settings(shards=1, partitions=2)
    ensure_topics(settings)
    config = runner_config(settings, "payment", 0).model_copy(update={"policies": f"{__name__}:WIRING", "runners": 1})
    skus = ["haunted-1", "plain-1"]
    append_stock_added(settings, skus)

    runner = PolicyRunner(config)
    try:
        poll_until(runner, len(skus), 30)
        assert runner.events == len(skus), "the runner went on past the bad event"
        assert runner.dead_letters == 1
    finally:
        runner.close()
    letters = read_dead_letters(settings.kafka.client_config(), settings.topic_name("choreo-dead-letters"))
    assert [(letter.stage, (letter.key or b"").decode()) for letter in letters] == [("policy payment-0", "haunted-1")]
    assert "ghost" in letters[0].error and "not a declared service" in letters[0].error

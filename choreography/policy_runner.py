"""Runs one service's policies: consume the event topics it reacts to, produce the commands, and
commit the consumed offsets in the same Kafka transaction as those commands."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ray
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict

from actors.live_spans import Headers, LiveSpans, TracingConfig, header_of
from actors.runtime import Watchdog, actor_options, cpu_s, exit_when_stuck, rss_mb, start_with_retry, tune_gc
from choreography.domain import load_registry, load_wiring
from choreography.policies import reacting_types, reactions, run_policies, source_services
from events.base import Command
from events.log.dlq import DeadLetter, dead_letter_from, send_dead_letter
from events.log.kafka_io import (
    TXN_OP_S,
    assign_committed,
    consumer_config,
    data_messages,
    event_type,
    position,
    producer_config,
)
from events.log.topics import commands_topic, dlq_topic, events_topic, partition_for, policy_group
from events.registry import DecodeError

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("choreo.policy")

Outgoing = tuple[Command, Headers | None]
"""A command to produce, with the Kafka headers of its live span (None when its saga is not traced)."""


class RunnerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    policies: str
    """Import path of the service's wiring table (metadata.services.<service>.policies)."""
    messages: dict[str, str]
    """Import path of every service's events.Messages, to decode the events it reacts to."""
    python_path: tuple[str, ...] = ()
    """Directories of declared code that is not installed (metadata.python_path)."""
    index: int
    runners: int
    kafka: dict[str, str]
    partitions: dict[str, int]
    """Partition count of every service's topics (to route commands and split sources)."""
    namespace: str = "choreo"
    topic_prefix: str = ""
    batch_max: int = 5000
    poll_ms: int = 25
    tracing: TracingConfig = TracingConfig()
    """Live spans (metadata.tracing); off unless its `sample` is above 0."""
    idle_commit_ms: int = 1000
    """How late the offsets of events that gave no command or dead letter may commit: with the next
    batch that does, or alone once this long has passed. Each commit is a Kafka transaction, and
    most events a service reads give it nothing to do; re-reading them after a crash gives nothing
    again (policies are pure functions of the event)."""

    @property
    def transactional_id(self) -> str:
        return f"{self.namespace}-policy-{self.service}-{self.index}"

    @property
    def group_id(self) -> str:
        return policy_group(self.namespace, self.service)


class PolicyRunner:
    def __init__(self, config: RunnerConfig, watchdog: Watchdog | None = None) -> None:
        self.config = config
        self.watchdog = watchdog or Watchdog()
        self.wiring = load_wiring(config.policies, f"metadata.services.{config.service}.policies", config.service)
        self.registry = load_registry(config.messages)
        self.ignored = frozenset(self.registry.events) - reacting_types(self.wiring, self.registry.events.values())
        """Known event types no policy of this service reacts to: skipped by their type header,
        undecoded (most of a topic's events, for most services). An event with no type header, or
        an unknown type, is decoded, so poison still reaches the dead-letter topic."""
        self.dlq_topic = dlq_topic(config.topic_prefix)
        self.stage = f"policy {config.service}-{config.index}"
        self.live = LiveSpans(config.tracing, config.service) if config.tracing.live else None
        self.producer = Producer(producer_config(config.kafka, config.transactional_id))
        self.producer.init_transactions(60)
        self.consumer = Consumer(consumer_config(config.kafka, config.group_id))
        assign_committed(
            self.consumer,
            config.kafka,
            config.group_id,
            [
                TopicPartition(events_topic(src, config.topic_prefix), p)
                for src in source_services(self.wiring)
                for p in range(config.partitions[src])
                if p % config.runners == config.index
            ],
        )
        self.metadata = self.consumer.consumer_group_metadata()
        self.events = 0
        self.commands = 0
        self.dead_letters = 0
        self.transactions = 0
        self.uncommitted: dict[tuple[str, int], int] = {}
        """Next offsets consumed but not committed yet (their events gave nothing to produce)."""
        self.uncommitted_since = 0.0

    def poll(self) -> int:
        """Consume one batch and commit its commands, dead letters and offsets atomically (or, if it
        gave neither, within `idle_commit_ms`, see RunnerConfig). Returns events read."""
        msgs = self.consumer.consume(num_messages=self.config.batch_max, timeout=self.config.poll_ms / 1000)
        offsets = self.uncommitted
        if not offsets:
            self.uncommitted_since = time.monotonic()
        commands: list[Outgoing] = []
        letters: list[DeadLetter] = []
        spans: list[Span] = []
        taken_ms = time.time_ns() // 1_000_000
        for msg in data_messages(msgs):
            topic = msg.topic() or ""
            p, offset = position(msg)
            offsets[(topic, p)] = offset + 1
            self.events += 1
            if event_type(msg) in self.ignored:
                continue
            try:
                commands.extend(self._react(msg, topic, p, offset, taken_ms, spans))
            except DecodeError as exc:
                letters.append(dead_letter_from(msg, self.stage, str(exc)))
            except Exception as exc:  # a policy bug: park the event, keep the flow going
                log.exception("policy failed on %s[%d]@%d", topic, p, offset)
                letters.append(dead_letter_from(msg, self.stage, f"{type(exc).__name__}: {exc}"))
        idle_s = time.monotonic() - self.uncommitted_since
        if not offsets or (not commands and not letters and idle_s < self.config.idle_commit_ms / 1000):
            return len(msgs)
        self.commit(commands, letters)
        for span in spans:
            span.end()
        return len(msgs)

    def commit(self, commands: Sequence[Outgoing] = (), letters: Sequence[DeadLetter] = ()) -> None:
        """One transaction: `commands` (each with the headers of its live span, if traced),
        `letters`, and every offset consumed so far."""
        offsets, self.uncommitted = self.uncommitted, {}
        self.producer.begin_transaction()
        for cmd, headers in commands:
            target = cmd.target
            self.producer.produce(
                commands_topic(target, self.config.topic_prefix),
                key=cmd.aggregate_id.encode(),
                value=self.registry.encode_command(cmd),
                partition=partition_for(cmd.aggregate_id, self.config.partitions[target]),
                headers=headers,
            )
        for letter in letters:
            send_dead_letter(self.producer, self.dlq_topic, letter)
        with self.watchdog.bound(f"send_offsets_to_transaction of {self.config.transactional_id}", TXN_OP_S):
            self.producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()], self.metadata, TXN_OP_S
            )
        with self.watchdog.bound(f"commit_transaction of {self.config.transactional_id}", TXN_OP_S):
            self.producer.commit_transaction(TXN_OP_S)
        self.transactions += 1
        self.commands += len(commands)
        self.dead_letters += len(letters)

    def _react(self, msg: Message, topic: str, p: int, offset: int, taken_ms: int, spans: list[Span]) -> list[Outgoing]:
        """The commands the wiring makes of the event. An event of a sampled saga (it carries a
        traceparent) gets a live span per policy reaction, passed on in its commands' headers."""
        stored = self.registry.decode_event(msg.value(), topic, p, offset)
        commands = run_policies(self.wiring, stored, services=self.config.partitions)
        parent = None if self.live is None or not commands else header_of(msg.headers())
        if parent is None or self.live is None:
            return [(cmd, None) for cmd in commands]
        out: list[Outgoing] = []
        for made in reactions(self.wiring, stored):
            if not made.commands:
                continue
            name = f"{self.config.service} {made.policy} on {stored.envelope.event_type}"
            attributes = {"choreo.policy": made.policy, "choreo.cause_event_id": stored.envelope.event_id}
            span = self.live.start(name, "consumer", taken_ms, parent, "", attributes)
            spans.append(span)
            out.extend((cmd, [LiveSpans.header(span)]) for cmd in made.commands)
        return out

    def close(self, commit: bool = True) -> None:
        """Stop: commit the offsets still uncommitted (unless `commit` is False), then leave."""
        if commit and self.uncommitted:
            self.commit()
        self.consumer.close()
        if self.live is not None:
            self.live.close()


class PolicyRunnerActor:
    """Runs a PolicyRunner in a background thread. Its start retries while the broker is
    unreachable; any error after that exits the process, and Ray restarts it (crash-only)."""

    def __init__(self, config: RunnerConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        tune_gc()
        self.config = config
        self.runner: PolicyRunner | None = None
        self.detail = ""
        self.stopping = threading.Event()
        self.watchdog = exit_when_stuck()
        self.thread = threading.Thread(target=self._loop, name="policies", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        name = f"policy {self.config.service}-{self.config.index}"
        try:
            self.runner = start_with_retry(
                lambda: PolicyRunner(self.config, self.watchdog),
                self.config.kafka,
                self.stopping,
                self._report,
                name,
            )
            while self.runner is not None and not self.stopping.is_set():
                self.runner.poll()
        except Exception:
            # Crash-only: Ray restarts the actor, which resumes from its committed offsets.
            log.exception("%s failed; exiting", name)
            os._exit(1)

    def _report(self, detail: str) -> None:
        self.detail = detail

    def info(self) -> dict[str, Any]:
        r = self.runner
        if r is None:
            return {"pid": os.getpid(), "phase": "starting", "detail": self.detail, "cpu_s": cpu_s()}
        return {
            "pid": os.getpid(),
            "phase": "running",
            "rss_mb": rss_mb(),
            "cpu_s": cpu_s(),
            "events": r.events,
            "commands": r.commands,
            "dead_letters": r.dead_letters,
            "transactions": r.transactions,
        }

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        if self.runner is not None:
            self.runner.close(commit=not self.thread.is_alive())  # never beside a poll


RemotePolicyRunner = ray.remote(PolicyRunnerActor)


def runner_actor_name(service: str, index: int) -> str:
    """The Ray actor name of a service's policy runner, in its deployment's namespace."""
    return f"policy-{service}-{index}"


def spawn_policy_runner(config: RunnerConfig, *, detached: bool = False) -> Any:
    options = actor_options(
        runner_actor_name(config.service, config.index),
        config.namespace,
        detached,
        config.python_path,
        max_task_retries=-1,
    )
    return RemotePolicyRunner.options(**options).remote(config)

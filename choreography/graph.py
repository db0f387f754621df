"""The choreography map, drawn from what cluster.yaml declares: the services, the events each one
emits and the commands it handles, which policy of which service reacts to which event and the
commands it sends, and which projections read which topics.

A policy's commands come from its return annotation (`-> list[ReserveStock]`, or a union of
command types), which mypy checks against its body. A policy annotated only `-> list[Command]`
still gets its edge, to the service that owns it, labelled `?` for the command.

The map renders as Mermaid text (always) or Graphviz DOT; `render` turns DOT into SVG or PNG with
the `graphviz-pure` program (the `graph` extra), which pip installs with its own layout engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from choreography.config import Settings
from choreography.policies import policy_name
from events.base import Command, Event

RENDERER = "graphviz-pure"
Load = Mapping[tuple[str, str], tuple[float, int]]
"""(consumer, topic) -> (events/s, lag) of the consumer group behind an edge (choreography.lag.edge_load)."""
BEGIN = "<!-- choreo graph: begin -->"
END = "<!-- choreo graph: end -->"


@dataclass(frozen=True)
class ServiceNode:
    name: str
    events: tuple[str, ...]
    """Type names of the events it stores (and so emits), in declaration order."""
    commands: tuple[str, ...]
    """Type names of the commands it handles."""


@dataclass(frozen=True)
class Reaction:
    """One wiring row, for one declared event it matches: `service`'s `policy` reacts to
    `source`'s `event` and sends `commands` (command type -> the service that handles it)."""

    service: str
    policy: str
    source: str
    event: str
    commands: tuple[tuple[str, str], ...]
    """Empty when the policy's return annotation does not name its command types."""


@dataclass(frozen=True)
class Reader:
    """A projection and the topics it reads."""

    name: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class ChoreographyMap:
    services: tuple[ServiceNode, ...]
    reactions: tuple[Reaction, ...]
    projections: tuple[Reader, ...]
    deadlines: tuple[tuple[str, str], ...] = ()
    """(service, command): the command its shards send an aggregate whose deadline passed."""

    def client_commands(self) -> list[tuple[str, str]]:
        """(service, command) pairs no policy or deadline is known to send: where sagas start."""
        sent = {(s, c) for r in self.reactions for c, s in r.commands} | set(self.deadlines)
        return [(s.name, c) for s in self.services for c in s.commands if (s.name, c) not in sent]

    def edges(self) -> list[tuple[str, str]]:
        """(event, command) pairs, for tests and the live view: `?` where a policy is vague."""
        return [(r.event, c) for r in self.reactions for c, _ in r.commands or (("?", r.service),)]

    def mermaid(self, load: Load | None = None) -> str:
        """With `load` ((consumer, topic) -> (events/s, lag), see choreography.lag.edge_load) every
        policy and projection edge also shows its consumer group's rate and lag on that topic."""
        lines = ["flowchart LR", "  client([client])"]
        note = partial(_load_note, load or {}, "<br/>")
        for s in self.services:
            lines.append(f'  subgraph {_id("s", s.name)}["{s.name}"]')
            lines += [f'    {_id("c", s.name, c)}[/"{c}"/]' for c in s.commands]
            lines += [f'    {_id("e", s.name, e)}(["{e}"])' for e in s.events]
            lines.append("  end")
        lines += [f"  client --> {_id('c', service, c)}" for service, c in self.client_commands()]
        if self.deadlines:
            lines.append("  deadline([deadline])")
            lines += [f"  deadline --> {_id('c', service, c)}" for service, c in self.deadlines]
        for start, label, command, service in self._policy_edges(note):
            lines.append(f'  {start} -- "{label}" --> {command or _id("s", service)}')
        for p in self.projections:
            lines.append(f'  {_id("p", p.name)}[("{p.name}")]')
            for topic in p.topics:
                label = f"{topic}{note(p.name, topic)}"
                lines.append(f'  {self._topic_node(topic, lines)} -- "{label}" --> {_id("p", p.name)}')
        return "\n".join(lines) + "\n"

    def dot(self, load: Load | None = None) -> str:
        note = partial(_load_note, load or {}, "\\n")
        lines = [
            "digraph choreography {",
            '  rankdir=LR; compound=true; fontname="Arial"; node [fontname="Arial", fontsize=11];',
            '  edge [fontname="Arial", fontsize=9];',
            '  client [shape=oval, style=filled, fillcolor="#eeeeee"];',
        ]
        for s in self.services:
            lines.append(f'  subgraph {_id("cluster", s.name)} {{ label="{s.name}"; style=rounded;')
            lines += [f'    {_id("c", s.name, c)} [label="{c}", shape=parallelogram];' for c in s.commands]
            lines += [f'    {_id("e", s.name, e)} [label="{e}", shape=box, style=rounded];' for e in s.events]
            lines.append("  }")
        lines += [f"  client -> {_id('c', service, c)};" for service, c in self.client_commands()]
        if self.deadlines:
            lines.append('  deadline [shape=oval, style=filled, fillcolor="#eeeeee"];')
            lines += [f"  deadline -> {_id('c', service, c)};" for service, c in self.deadlines]
        for start, label, command, service in self._policy_edges(note):
            if command:
                lines.append(f'  {start} -> {command} [label="{label}"];')
            else:
                cluster = _id("cluster", service)
                lines.append(f'  {start} -> {self._anchor(service)} [label="{label}", lhead={cluster}];')
        for p in self.projections:
            lines.append(f'  {_id("p", p.name)} [label="{p.name}", shape=cylinder];')
            for topic in p.topics:
                owner = self._owner(topic)
                if owner is None:
                    lines.append(f'  {_id("t", topic)} [label="{topic}", shape=note];')
                    lines.append(f'  {_id("t", topic)} -> {_id("p", p.name)} [label="{topic}{note(p.name, topic)}"];')
                else:
                    lines.append(
                        f"  {self._anchor(owner)} -> {_id('p', p.name)} "
                        f'[label="{topic}{note(p.name, topic)}", ltail={_id("cluster", owner)}, style=dashed];'
                    )
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _policy_edges(self, note: Callable[[str, str], str]) -> Iterator[tuple[str, str, str, str]]:
        """(event node, label, command node, policy's service) per policy edge; the command node is
        "" for a policy that names no command (its edge goes to its service)."""
        for r in self.reactions:
            start, load = _id("e", r.source, r.event), note(r.service, r.source + "-events")
            for command, target in r.commands:
                yield start, f"{r.service}: {r.policy}{load}", _id("c", target, command), r.service
            if not r.commands:
                yield start, f"{r.service}: {r.policy} (?){load}", "", r.service

    def _owner(self, topic: str) -> str | None:
        """The service whose events topic this is."""
        return next((s.name for s in self.services if topic == f"{s.name}-events"), None)

    def _anchor(self, service: str) -> str:
        """A node inside the service's cluster, for DOT edges that start or end at the cluster."""
        s = next(s for s in self.services if s.name == service)
        return _id("e", s.name, s.events[0]) if s.events else _id("c", s.name, s.commands[0])

    def _topic_node(self, topic: str, lines: list[str]) -> str:
        """The service subgraph of an events topic, or a node of its own for any other topic."""
        owner = self._owner(topic)
        if owner is not None:
            return _id("s", owner)
        node = _id("t", topic)
        declaration = f'  {node}[["{topic}"]]'
        if declaration not in lines:
            lines.append(declaration)
        return node


def _load_note(load: Load, newline: str, consumer: str, topic: str) -> str:
    if (consumer, topic) not in load:
        return ""
    rate, lag = load[(consumer, topic)]
    return f"{newline}{rate:,.0f} ev/s, lag {lag:,}"


def _id(kind: str, *parts: str) -> str:
    return "_".join([kind, *(re.sub(r"\W", "_", p) for p in parts)])


def sent_commands(fn: Callable[..., Any]) -> tuple[type[Command], ...]:
    """The command types a function's return annotation names (`A`, `list[A]`, `list[A | B]`,
    `Sequence[A]`), or () when it names none precisely (`list[Command]`, no annotation)."""
    try:
        returned = typing.get_type_hints(fn).get("return")
    except Exception:  # a callable object, a partial, an annotation that does not resolve
        return ()
    args = typing.get_args(returned)
    if isinstance(returned, type) or typing.get_origin(returned) in (typing.Union, types.UnionType):
        inner = returned
    elif len(args) == 1:
        inner = args[0]
    else:
        return ()
    members = typing.get_args(inner) if typing.get_origin(inner) in (typing.Union, types.UnionType) else (inner,)
    commands = tuple(m for m in members if isinstance(m, type) and issubclass(m, Command) and m is not Command)
    return commands if len(commands) == len(members) else ()


def choreography_map(settings: Settings) -> ChoreographyMap:
    registry = settings.registry()
    events_of: dict[str, list[type[Event]]] = {name: [] for name in settings.services}
    for cls in registry.events.values():
        events_of.setdefault(cls.aggregate_type, []).append(cls)
    commands_of: dict[str, list[str]] = {name: [] for name in settings.services}
    for name, command in registry.commands.items():
        commands_of.setdefault(command.target, []).append(name)
    services = tuple(
        ServiceNode(name, tuple(e.type_name() for e in events_of[name]), tuple(commands_of[name]))
        for name in settings.services
    )
    reactions = tuple(
        Reaction(
            service=service,
            policy=policy_name(row.policy),
            source=cls.aggregate_type,
            event=cls.type_name(),
            commands=tuple((c.type_name(), c.target) for c in sent_commands(row.policy)),
        )
        for service in settings.services
        for row in settings.wiring(service)
        for cls in _matching(row.event, registry.events.values())
    )
    readers = tuple(Reader(name, tuple(spec.topics)) for name, spec in settings.projections.items())
    deadlines = tuple(
        (service, command.type_name())
        for service, spec in settings.services.items()
        if spec.deadline_s
        for command in _expiry_commands(settings.aggregate(service))
    )
    return ChoreographyMap(services, reactions, readers, deadlines)


def _expiry_commands(aggregate: object) -> tuple[type[Command], ...]:
    """What a HasDeadlines aggregate's `expire` is annotated to return."""
    expire = getattr(aggregate, "expire", None)
    return sent_commands(expire) if callable(expire) else ()


def _matching(event: type[Event], declared: Iterable[type[Event]]) -> list[type[Event]]:
    """The declared event types a wiring row reacts to (a row matches subclasses too)."""
    return [cls for cls in declared if issubclass(cls, event)]


# ---- embedding in a markdown file, and rendering ---------------------------------------------------


def embedded(text: str) -> str | None:
    """The Mermaid source between the markers of a markdown file, or None without markers."""
    if BEGIN not in text or END not in text:
        return None
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    return block.strip().removeprefix("```mermaid").removesuffix("```").strip() + "\n"


def embed(text: str, mermaid: str) -> str:
    """`text` with the block between the markers replaced by `mermaid` (markers appended if absent)."""
    block = f"{BEGIN}\n```mermaid\n{mermaid}```\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


class RendererMissing(RuntimeError):
    pass


def renderer() -> str:
    """The graphviz-pure program: next to this Python (a virtualenv) or on PATH."""
    beside = Path(sys.executable).with_name(RENDERER)
    found = str(beside) if beside.exists() else shutil.which(RENDERER)
    if found is None:
        raise RendererMissing(
            f"SVG and PNG need the {RENDERER} renderer: pip install 'choreo[graph]' (or pip install {RENDERER}); "
            "Mermaid and DOT need nothing"
        )
    return found


def render(dot: str, fmt: str, timeout: float = 60) -> bytes:
    """DOT source -> `fmt` (svg or png) bytes."""
    done = subprocess.run([renderer(), f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{RENDERER} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout

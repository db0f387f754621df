"""The user's domain, imported from the `module:attribute` paths cluster.yaml declares.

The runtime knows no domain: every service names its aggregate, its messages and its policy
wiring, and every projection its class. This module imports and checks them, with errors that
name the cluster.yaml key and the problem. Actors receive the paths (plain strings) and import
them in their own process with the same functions."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cache
from typing import Any

from actors.aggregate import Aggregate, HasDeadlines
from choreography.policies import On
from events.registry import Messages, Registry
from projections.base import Projection

IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
"""`package.module:attribute` (the attribute may be dotted)."""


class DeclarationError(ValueError):
    """A declared import path cannot be used; the message names the cluster.yaml key."""


@cache
def _import(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(path: str, key: str) -> Any:
    """The object at `module:attribute`, or DeclarationError naming `key` and why not."""
    if ":" not in path:
        raise DeclarationError(f"{key}: {path!r} is not an import path of the form 'package.module:attribute'")
    try:
        return _import(path)
    except ImportError as exc:
        raise DeclarationError(f"{key}: cannot import {path!r} ({exc})") from None
    except AttributeError:
        module_name, _, attribute = path.partition(":")
        raise DeclarationError(f"{key}: cannot import {path!r} (module {module_name!r} has no {attribute!r})") from None
    except Exception as exc:  # the module itself fails: a syntax error, an exception at import
        raise DeclarationError(f"{key}: importing {path!r} failed ({type(exc).__name__}: {exc})") from None


def load_aggregate(path: str, key: str, service: str, deadline_s: float | None = None) -> Aggregate[Any]:
    """Build the service's aggregate: `path` names a class or factory, called with no arguments,
    or with `deadline=timedelta(seconds=deadline_s)` when the service declares a deadline."""
    factory = resolve(path, key)
    if not callable(factory):
        raise DeclarationError(f"{key}: {path!r} is not a class or factory")
    no_deadlines = f"{key}: deadline_s is set but {path!r} has no deadline support (due_at/expire, see HasDeadlines)"
    if deadline_s and isinstance(factory, type) and not issubclass(factory, HasDeadlines):
        raise DeclarationError(no_deadlines)
    try:
        aggregate = factory(deadline=timedelta(seconds=deadline_s)) if deadline_s else factory()
    except Exception as exc:
        raise DeclarationError(f"{key}: cannot build {path!r} ({type(exc).__name__}: {exc})") from None
    missing = [m for m in ("initial", "decide", "evolve") if not callable(getattr(aggregate, m, None))]
    if missing:
        raise DeclarationError(f"{key}: {path!r} does not implement {'/'.join(missing)}")
    for attr in ("aggregate_type", "state_type"):
        if not hasattr(aggregate, attr):
            raise DeclarationError(f"{key}: {path!r} has no {attr!r}")
    if aggregate.aggregate_type != service:
        raise DeclarationError(f"{key}: {path!r} has aggregate_type {aggregate.aggregate_type!r}, not {service!r}")
    if deadline_s and not isinstance(aggregate, HasDeadlines):
        raise DeclarationError(no_deadlines)
    checked: Aggregate[Any] = aggregate
    return checked


def load_messages(path: str, key: str, service: str) -> Messages:
    messages = resolve(path, key)
    if not isinstance(messages, Messages):
        raise DeclarationError(f"{key}: {path!r} is a {type(messages).__name__}, not an events.Messages")
    problems = messages.problems(service)
    if problems:
        raise DeclarationError(f"{key}: {'; '.join(problems)}")
    return messages


def load_registry(messages: Mapping[str, str]) -> Registry:
    """The registry of every declared service's messages (service -> import path)."""
    bundles = [load_messages(path, f"metadata.services.{svc}.messages", svc) for svc, path in messages.items()]
    try:
        return Registry.of(*bundles)
    except ValueError as exc:
        raise DeclarationError(f"metadata.services: {exc}") from None


def load_wiring(path: str | None, key: str, service: str) -> list[On]:
    """The service's policy wiring table: a sequence of `On(EventType, policy)` rows (none when
    the service reacts to nothing)."""
    if path is None:
        return []
    wiring = resolve(path, key)
    if not isinstance(wiring, Sequence) or not all(isinstance(row, On) for row in wiring):
        raise DeclarationError(f"{key}: {path!r} is not a list of choreography.On rows")
    for row in wiring:
        if row.event.aggregate_type == service:
            raise DeclarationError(
                f"{key}: {service} reacts to its own event {row.event.type_name()}; a service's policies react "
                "to other services' events (decide it in the aggregate instead)"
            )
    return list(wiring)


def load_projection(path: str, key: str, name: str) -> Projection:
    cls = resolve(path, key)
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        raise DeclarationError(f"{key}: {path!r} is not a projections.Projection subclass")
    projection = cls()
    if projection.name != name:
        raise DeclarationError(f"{key}: {path!r} is named {projection.name!r}, not {name!r}")
    return projection

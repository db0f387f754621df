"""Declared code: the user's domain, imported from the `module:attribute` paths cluster.yaml names.

The runtime knows no domain. Every service names its aggregate, its messages and its policy
wiring, and every projection its class. Bootstrap imports and checks them, with errors that name
the cluster.yaml key and the problem; actors receive the paths (plain strings) and import them in
their own process with the same functions. This module resolves paths and loads messages; the
aggregate, projection and wiring loaders live next to their contracts."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any

from events.registry import Messages, Registry

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

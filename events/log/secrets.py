"""Secrets by reference. A Kafka client property may hold `${env:NAME}` or `${file:PATH}` instead
of its value; the process that builds the client resolves it. So a secret's value never travels in
settings or as an actor argument (Ray keeps those in its control store to restart actors): actors
get the reference and read the variable or the file themselves."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

REFERENCE = re.compile(r"^\$\{(env|file):(.+)\}$")
SECRET_WORDS = ("password", "secret")


class SecretError(ValueError):
    """A secret's reference does not resolve; the message names the property and the reference."""


def is_secret(key: str) -> bool:
    """Whether a client property holds a secret (sasl.password, ssl.key.password, ...)."""
    return any(word in key for word in SECRET_WORDS)


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and REFERENCE.match(value) is not None


def env_reference(name: str) -> str:
    return f"${{env:{name}}}"


def file_reference(path: str | Path) -> str:
    return f"${{file:{path}}}"


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every `${env:NAME}` / `${file:PATH}` value replaced by what it names."""
    if not any(is_reference(v) for v in config.values()):
        return config
    return {key: resolve_value(key, value) for key, value in config.items()}


def resolve_value(key: str, value: Any) -> Any:
    """What `value` names when it is a reference (`key` names it in errors), else `value` itself."""
    match = REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    kind, target = match.groups()
    if kind == "env":
        if target not in os.environ:
            raise SecretError(f"{key}: environment variable {target} is not set (this process reads it)")
        return os.environ[target]
    try:
        return Path(target).expanduser().read_text().rstrip("\r\n")
    except OSError as exc:
        raise SecretError(f"{key}: cannot read {target}: {exc.strerror}") from None

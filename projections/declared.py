"""Loading a declared projection class (metadata.projections.<name>.projection)."""

from __future__ import annotations

from events.declared import DeclarationError, resolve
from projections.base import Projection


def load_projection(path: str, key: str, name: str) -> Projection:
    cls = resolve(path, key)
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        raise DeclarationError(f"{key}: {path!r} is not a projections.Projection subclass")
    projection = cls()
    if projection.name != name:
        raise DeclarationError(f"{key}: {path!r} is named {projection.name!r}, not {name!r}")
    return projection

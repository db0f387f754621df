"""JSON-schema snapshots of every event type and the compatibility check CI runs against them.

Stored events are never rewritten, so every payload ever written must stay readable by the current
code. A snapshot file (the reference app's: `shop/schemas.snapshot.json`) records each event
type's `schema_version` and pydantic JSON schema; `compatibility_errors` compares that snapshot with the current models:

* an event type in the snapshot must still exist;
* at an unchanged `schema_version`, every property must still exist with the same JSON type
  (`type`, `format`, `$ref`-resolved nested models, `items`, `anyOf` branches, enum values may only
  grow), no property may become required and no required property may be removed. Adding an
  optional property, or making a required one optional, is compatible;
* a raised `schema_version` is compatible only if the registry holds an upcaster for every step
  from the snapshot's version, and then the new shape is accepted as is: the upcasters bring old
  payloads to it on read.

    choreo schemas check   # exit 1 with one line per incompatibility, else print OK
    choreo schemas write   # refresh the snapshot after a compatible change

(`metadata.schema_snapshot` in cluster.yaml names the file; the registry is the declared
services' messages.) Without a cluster file: `python -m events.schemas --check --registry
module:factory --snapshot PATH`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from events.registry import Registry

Schema = dict[str, Any]
Seen = frozenset[tuple[str, str]]


def current_schemas(registry: Registry) -> dict[str, dict[str, Any]]:
    """Per event type: its `schema_version` and its pydantic `model_json_schema()`."""
    return {
        name: {"schema_version": cls.schema_version, "schema": cls.model_json_schema()}
        for name, cls in sorted(registry.events.items())
    }


def render(schemas: dict[str, dict[str, Any]]) -> str:
    """The snapshot file's text: pretty-printed JSON with sorted keys."""
    return json.dumps(schemas, indent=2, sort_keys=True) + "\n"


def write_snapshot(path: Path, registry: Registry) -> None:
    path.write_text(render(current_schemas(registry)), encoding="utf-8")


def load_snapshot(path: Path) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def compatibility_errors(
    old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], registry: Registry
) -> list[str]:
    """Why payloads stored under the `old` schemas could not be read under the `new` ones; [] if they can."""
    errors: list[str] = []
    for event_type in sorted(old):
        if event_type not in new:
            errors.append(f"{event_type}: event type was removed, its stored events could not be read")
            continue
        old_version = int(old[event_type]["schema_version"])
        new_version = int(new[event_type]["schema_version"])
        if new_version < old_version:
            errors.append(f"{event_type}: schema_version went down from v{old_version} to v{new_version}")
        elif new_version > old_version:
            for version in range(old_version, new_version):
                if not registry.has_upcaster(event_type, version):
                    errors.append(
                        f"{event_type}: schema_version went from v{old_version} to v{new_version} "
                        f"but no upcaster is registered for v{version} -> v{version + 1}"
                    )
        else:
            old_schema: Schema = old[event_type]["schema"]
            new_schema: Schema = new[event_type]["schema"]
            old_defs: Schema = old_schema.get("$defs", {})
            new_defs: Schema = new_schema.get("$defs", {})
            path = f"{event_type} v{old_version}"
            errors.extend(_compare(path, old_schema, old_defs, new_schema, new_defs, frozenset()))
    return errors


# ---- structural comparison ------------------------------------------------------------


def _resolve(node: Schema, defs: Schema) -> tuple[Schema, str]:
    """Follow `$ref`s (and pydantic's single-element `allOf` wrappers) to the schema they name."""
    name = ""
    for _ in range(32):
        if "$ref" in node:
            ref = str(node["$ref"])
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith("#/$defs/") or name not in defs:
                return {"unresolved": ref}, name
            node = defs[name]
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            break
    return node, name


def _branches(node: Schema) -> list[Schema]:
    branches = node.get("anyOf", node.get("oneOf", []))
    return list(branches) if isinstance(branches, list) else []


def _kind(node: Schema, defs: Schema) -> str:
    """A readable summary of a schema's JSON type at this level (its branches' too)."""
    if "unresolved" in node:
        return f"unresolved {node['unresolved']}"
    branches = _branches(node)
    if branches:
        return " | ".join(sorted(_kind(_resolve(b, defs)[0], defs) for b in branches))
    if "const" in node:
        return f"const {json.dumps(node['const'])}"
    declared = node.get("type")
    if isinstance(declared, list):
        kind = "|".join(sorted(str(t) for t in declared))
    elif declared is not None:
        kind = str(declared)
    elif "properties" in node:
        kind = "object"
    elif "enum" in node:
        kind = "enum"
    else:
        return "any"
    if "format" in node:
        kind += f" ({node['format']})"
    if "enum" in node:
        kind += " enum"
    if "prefixItems" in node:
        kind += f" of {len(node['prefixItems'])} items"
    return kind


def _compare(path: str, old: Schema, old_defs: Schema, new: Schema, new_defs: Schema, seen: Seen) -> list[str]:
    old, old_name = _resolve(old, old_defs)
    new, new_name = _resolve(new, new_defs)
    old_kind, new_kind = _kind(old, old_defs), _kind(new, new_defs)
    if old_kind != new_kind:
        return [f"{path}: type changed from {old_kind} to {new_kind}"]
    if old_name and new_name:
        if (old_name, new_name) in seen:  # a recursive model, already being compared
            return []
        seen = seen | {(old_name, new_name)}
    errors: list[str] = []
    if "enum" in old:
        lost = [v for v in old["enum"] if v not in new.get("enum", [])]
        if lost:
            errors.append(f"{path}: enum values removed: {', '.join(json.dumps(v) for v in lost)}")
    if "properties" in old or "properties" in new:
        errors.extend(_compare_object(path, old, old_defs, new, new_defs, seen))
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            errors.extend(_compare(path + suffix, old[key], old_defs, new[key], new_defs, seen))
    for i, (o, n) in enumerate(zip(old.get("prefixItems", []), new.get("prefixItems", []), strict=False)):
        errors.extend(_compare(f"{path}[{i}]", o, old_defs, n, new_defs, seen))
    old_branches = sorted(_branches(old), key=lambda b: _kind(_resolve(b, old_defs)[0], old_defs))
    new_branches = sorted(_branches(new), key=lambda b: _kind(_resolve(b, new_defs)[0], new_defs))
    for o, n in zip(old_branches, new_branches, strict=False):
        errors.extend(_compare(path, o, old_defs, n, new_defs, seen))
    return errors


def _compare_object(path: str, old: Schema, old_defs: Schema, new: Schema, new_defs: Schema, seen: Seen) -> list[str]:
    old_props: Schema = old.get("properties", {})
    new_props: Schema = new.get("properties", {})
    old_required = set(old.get("required", []))
    new_required = set(new.get("required", []))
    errors: list[str] = []
    for name, prop in old_props.items():
        if name not in new_props:
            what = "required property" if name in old_required else "property"
            errors.append(f"{path}: {what} {name!r} was removed")
        else:
            errors.extend(_compare(f"{path}.{name}", prop, old_defs, new_props[name], new_defs, seen))
    for name in sorted(new_required - old_required):
        if name in old_props:
            errors.append(f"{path}: property {name!r} became required")
        else:
            errors.append(f"{path}: new property {name!r} is required; stored events lack it")
    return errors


# ---- command line ---------------------------------------------------------------------


def run(write: bool, snapshot_path: Path, registry: Registry, how: str) -> int:
    """Check (or write) the snapshot; print what is wrong. `how` tells the user how to write it."""
    if write:
        write_snapshot(snapshot_path, registry)
        print(f"wrote {snapshot_path}")
        return 0
    if not snapshot_path.exists():
        print(f"{snapshot_path}: no schema snapshot; create it with {how}")
        return 1
    snapshot = load_snapshot(snapshot_path)
    current = current_schemas(registry)
    errors = compatibility_errors(snapshot, current, registry)
    for error in errors:
        print(error)
    if errors:
        return 1
    print("OK")
    if json.loads(render(current)) != snapshot:
        print(f"note: compatible changes are not in {snapshot_path.name} yet; run {how}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m events.schemas", description="Check event schemas against a committed snapshot."
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail on an incompatible change")
    mode.add_argument("--write", action="store_true", help="rewrite the snapshot from the current models")
    parser.add_argument("--snapshot", type=Path, required=True, help="snapshot file")
    parser.add_argument("--registry", required=True, help="module:attribute of a function returning the Registry")
    args = parser.parse_args(argv)
    module_name, _, attribute = args.registry.partition(":")
    registry = getattr(importlib.import_module(module_name), attribute)()
    how = f"python -m events.schemas --write --registry {args.registry} --snapshot {args.snapshot}"
    return run(args.write, args.snapshot, registry, how)


if __name__ == "__main__":
    sys.exit(main())

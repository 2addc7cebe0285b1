"""The committed JSON Schema snapshot of every contract, and what counts as a breaking change.

``python -m contracts.snapshot`` compares ``contracts/schemas/<tag>.json`` with the schemas the
code generates now and exits 1 listing what differs. ``--write`` records compatible changes; it
refuses breaking ones (make a new ``.vN`` type instead) unless ``--allow-breaking`` is given.

The snapshot is a contract's *shape* — fields, types, required, tags, enums, defaults and
bounds — never its prose: titles, descriptions and examples are dropped before it is written or
compared, so a reworded docstring (or a msgspec release that renders docstrings differently)
changes nothing. Events are stored and replayed for ever, so a bound that narrows breaks them;
commands and replies are only in flight, so a command may tighten its bounds (a longer string
from an old client is refused with a clear 422, nothing stored becomes unreadable).
A leaf module: imports msgspec, the standard library and ``contracts`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

import contracts
from contracts.envelope import tag_of

SCHEMAS_DIR = Path(__file__).with_name("schemas")

Schema = dict[str, Any]

#: Keys that document a schema: prose, never part of a snapshot.
_PROSE = frozenset({"title", "description", "examples"})
#: Keys that document a schema (or are compared on their own) rather than constrain the wire form.
_ANNOTATIONS = _PROSE | {"default"}
#: Keys that bound a value; a command may narrow them, an event may not.
_BOUNDS = frozenset(
    {
        "maxLength",
        "minLength",
        "pattern",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "maxItems",
        "minItems",
        "maxProperties",
        "minProperties",
    }
)


def current() -> dict[str, Schema]:
    """The shape of every contract type's JSON Schema, by tag, as the code defines it now."""
    return {tag_of(cls): shape(msgspec.json.schema(cls)) for cls in contracts.ALL}


def stored_tags() -> frozenset[str]:
    """Tags of the contracts that are stored (every context's ``Event`` union)."""
    contexts = (
        contracts.identity,
        contracts.projects,
        contracts.datasets,
        contracts.training,
        contracts.exports,
    )
    return frozenset(tag_of(t) for m in contexts for t in typing.get_args(m.Event))


def shape(node: Any) -> Any:
    """``node`` without its prose (titles, descriptions, examples), at every depth."""
    if isinstance(node, list):
        return [shape(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "$defs"):  # names, not annotations, even one called "title"
            out[key] = {name: shape(s) for name, s in value.items()}
        elif key not in _PROSE:
            out[key] = shape(value)
    return out


def stored(directory: Path = SCHEMAS_DIR) -> dict[str, Schema]:
    """The committed snapshot, by tag (the file name less ``.json``), as shapes."""
    return {
        p.stem: shape(json.loads(p.read_text("utf-8"))) for p in sorted(directory.glob("*.json"))
    }


def render(schema: Schema) -> str:
    return json.dumps(schema, sort_keys=True, indent=2) + "\n"


def breaking_changes(old_schema: Schema, new_schema: Schema, *, stored: bool = True) -> list[str]:
    """Why data written against ``old_schema`` may not read as ``new_schema``; empty if it will.

    ``stored=False`` (a command or reply, never replayed) lets bounds narrow."""
    defs = _Defs(old_schema.get("$defs", {}), new_schema.get("$defs", {}), stored)
    return _diff("", old_schema, new_schema, defs)


class _Defs(typing.NamedTuple):
    old: Schema
    new: Schema
    stored: bool


def _diff(path: str, old: Schema, new: Schema, defs: _Defs) -> list[str]:
    old, new = _deref(old, defs.old), _deref(new, defs.new)
    if "properties" in old and "properties" in new:  # a struct: compare it field by field
        return _struct_diff(path, old, new, defs)
    items = old.get("items"), new.get("items")  # ``False`` for a tuple (its ``prefixItems``)
    if old.get("type") == new.get("type") == "array" and all(isinstance(i, dict) for i in items):
        return _diff(f"{path}[]", old["items"], new["items"], defs)  # e.g. ``list[Inner]``
    before, after = _inline(old, defs.old), _inline(new, defs.new)
    if not defs.stored:
        before, after = _unbounded(before), _unbounded(after)
        if _to_choices(before, after):
            return []
    if before == after or _widens(before, after):
        return []
    if len(old.get("anyOf", ())) == len(new.get("anyOf", ())) > 0:  # e.g. ``Inner | None``
        pairs = zip(old["anyOf"], new["anyOf"], strict=True)
        return [c for o, n in pairs for c in _diff(path, o, n, defs)]
    return [f"property '{path}' changed type: {_show(before)} -> {_show(after)}"]


def _unbounded(node: Any) -> Any:
    """``node`` without its bounds, at every depth (``properties`` keys are names)."""
    if isinstance(node, list):
        return [_unbounded(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: {n: _unbounded(s) for n, s in value.items()}
        if key == "properties"
        else _unbounded(value)
        for key, value in node.items()
        if key == "properties" or key not in _BOUNDS
    }


def _struct_diff(prefix: str, old: Schema, new: Schema, defs: _Defs) -> list[str]:
    changes = []
    old_tag, new_tag = _tag(old), _tag(new)
    if old_tag != new_tag:
        changes.append(f"{prefix or 'contract'} tag changed: {old_tag} -> {new_tag}")
    old_props, new_props = old["properties"], new["properties"]
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name, before in old_props.items():
        path = f"{prefix}.{name}" if prefix else name
        if name == "type" and (old_tag or new_tag):
            continue
        if name not in new_props:
            changes.append(f"removed property '{path}'")
            continue
        after = new_props[name]
        changes += _diff(path, before, after, defs)
        changes += _default_changed(path, before, after)
    for name in sorted(new_required - old_required):
        path = f"{prefix}.{name}" if prefix else name
        became = "became required" if name in old_props else "is new and required"
        changes.append(f"property '{path}' {became}")
    return changes


def _default_changed(path: str, before: Schema, after: Schema) -> list[str]:
    # Older payloads that omit the field would replay with a different value.
    if "default" not in before or "default" not in after or before["default"] == after["default"]:
        return []
    old, new = _show(before["default"]), _show(after["default"])
    return [f"property '{path}' default changed: {old} -> {new}"]


def _deref(node: Schema, defs: Schema) -> Schema:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _inline(node: Any, defs: Schema, seen: frozenset[str] = frozenset()) -> Any:
    """``node`` with its ``$ref``s resolved and its annotations dropped, for comparison."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:  # a recursive type: compare the recursion by name
            return {"$ref": name}
        return _inline(defs[name], defs, seen | {name})
    out = {}
    for key, value in node.items():
        if key == "properties":  # field names, not annotations, even one called "description"
            out[key] = {name: _inline(s, defs, seen) for name, s in value.items()}
        elif key not in _ANNOTATIONS:
            out[key] = _inline(value, defs, seen)
    return out


def _widens(before: Schema, after: Schema) -> bool:
    """True if ``after`` accepts everything ``before`` did: a union or enum that grew."""
    if before.keys() == after.keys() == {"enum"}:
        return all(value in after["enum"] for value in before["enum"])
    variants = after.get("anyOf", [after])
    return all(variant in variants for variant in before.get("anyOf", [before]))


def _to_choices(before: Schema, after: Schema) -> bool:
    """True if a string became one of some words: for a command, a bound that narrowed."""
    if before != {"type": "string"} or after.keys() != {"enum"}:
        return False
    return all(isinstance(word, str) for word in after["enum"])


def _tag(struct: Schema) -> str | None:
    tag = struct["properties"].get("type", {})
    values = [tag["const"]] if "const" in tag else tag.get("enum", [])
    return str(values[0]) if len(values) == 1 else None


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def compare(old: dict[str, Schema], new: dict[str, Schema]) -> tuple[list[str], list[str]]:
    """``(compatible, breaking)`` differences between two snapshots, one line each."""
    compatible = [f"{tag}: new contract, no snapshot yet" for tag in sorted(new.keys() - old)]
    breaking = [f"{tag}: snapshot has no contract (removed)" for tag in sorted(old.keys() - new)]
    events = stored_tags()
    for tag in sorted(old.keys() & new.keys()):
        if old[tag] == new[tag]:
            continue
        if found := breaking_changes(old[tag], new[tag], stored=tag in events):
            breaking += [f"{tag}: {change}" for change in found]
        else:
            compatible.append(f"{tag}: changed compatibly")
    return compatible, breaking


def write(schemas: dict[str, Schema], directory: Path = SCHEMAS_DIR) -> None:
    """Make ``directory`` hold exactly ``schemas``, one ``<tag>.json`` file each."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.json"):
        if path.stem not in schemas:
            path.unlink()
    for tag, schema in schemas.items():
        path = directory / f"{tag}.json"
        text = render(schema)
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")


def main(argv: Sequence[str] | None = None, directory: Path = SCHEMAS_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.snapshot", description=__doc__)
    parser.add_argument("--write", action="store_true", help="record the current schemas")
    parser.add_argument("--allow-breaking", action="store_true", help="record breaking ones too")
    args = parser.parse_args(argv)
    now = current()
    compatible, breaking = compare(stored(directory), now)
    for line in breaking:
        print(f"BREAKING {line}", file=sys.stderr)
    if args.write and (args.allow_breaking or not breaking):
        write(now, directory)
        return 0
    for line in compatible:
        print(f"changed  {line}", file=sys.stderr)
    if breaking:
        print("a breaking change needs a new .vN type; nothing was written", file=sys.stderr)
    elif compatible:
        print("compatible changes: run `make snapshots` and commit them", file=sys.stderr)
    return 1 if compatible or breaking else 0


if __name__ == "__main__":
    sys.exit(main())

"""Contract tests: every contract round-trips, is snapshotted, is well tagged, reads old payloads.

A breaking change to a committed contract fails here; see ``test_snapshot.py`` for the tests of
the rule that decides what is breaking.
"""

from __future__ import annotations

import json
import operator
import re
import sys
import typing
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

import contracts
from contracts import snapshot
from contracts.common import Reply
from contracts.envelope import Message, tag_of
from contracts.projects import (
    Command,
    Event,
    ProjectArchived,
    ProjectCreated,
    ProjectDescriptionUpdated,
    ProjectRenamed,
)

UNIONS = {"Event": Event, "Command": Command, "Reply": Reply}
ANY_CONTRACT = reduce(operator.or_, contracts.ALL)
CURRENT = snapshot.current()
STORED = snapshot.stored()
EVENTS = snapshot.stored_tags()
MAKE_SNAPSHOTS = "run `make snapshots` and commit contracts/schemas/"


def sample(t: mi.Type) -> Any:
    """A representative value of type ``t``, derived from the annotation alone."""
    match t:
        case mi.StrType(min_length=least):
            return "x" * max(least or 0, 2)  # two: a username is at least that long
        case mi.BoolType():
            return True
        case mi.IntType():
            return 1
        case mi.FloatType():
            return 1.5
        case mi.NoneType():
            return None
        case mi.UnionType(types=types):
            optional = any(isinstance(member, mi.NoneType) for member in types)
            return None if optional else sample(types[0])
        case mi.LiteralType(values=values):
            return values[0]
        case mi.DictType(key_type=key, value_type=value):
            return {sample(key): sample(value)}
        case mi.ListType(item_type=item):
            return [sample(item)]
        case mi.DateTimeType():
            return datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        case mi.StructType(cls=cls):
            return build(cls)
        case mi.TupleType(item_types=items):
            return tuple(sample(item) for item in items)
        case mi.BytesType():
            return b"\x00bytes"
        case mi.AnyType():
            return {"nested": [1, "two", None]}
    raise NotImplementedError(f"teach sample() a value for {t!r}")


def build(cls: type[msgspec.Struct]) -> Any:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return cls(**{f.name: sample(f.type) for f in info.fields if f.required})


def union_of(cls: type[Message]) -> Any:
    return next((u for u in UNIONS.values() if cls in typing.get_args(u)), ANY_CONTRACT)


@pytest.mark.parametrize("cls", contracts.ALL, ids=tag_of)
def test_every_contract_round_trips_through_json(cls: type[Message]) -> None:
    message = build(cls)
    wire = msgspec.json.encode(message)
    assert msgspec.json.decode(wire, type=cls) == message
    decoded = msgspec.json.decode(wire, type=union_of(cls))
    assert type(decoded) is cls
    assert decoded == message
    assert type(msgspec.json.decode(wire, type=ANY_CONTRACT)) is cls


@pytest.mark.parametrize("name", sorted(UNIONS))
def test_every_union_member_is_a_listed_contract(name: str) -> None:
    assert set(typing.get_args(UNIONS[name])) <= set(contracts.ALL)


@pytest.mark.parametrize("tag", sorted(CURRENT))
def test_committed_snapshot_matches_the_contract(tag: str) -> None:
    old, new = STORED.get(tag), CURRENT[tag]
    if old is None:
        pytest.fail(f"{tag} has no snapshot: {MAKE_SNAPSHOTS}")
    if old == new:
        return
    if breaks := snapshot.breaking_changes(old, new, stored=tag in EVENTS):
        listed = "\n  ".join(breaks)
        pytest.fail(
            f"{tag} changed incompatibly:\n  {listed}\n"
            "Stored events must still decode: leave this type as it was and add a new .vN type."
        )
    pytest.fail(f"{tag} changed compatibly: {MAKE_SNAPSHOTS}")


def test_every_contract_has_a_snapshot_and_every_snapshot_a_contract() -> None:
    missing = sorted(CURRENT.keys() - STORED.keys())
    removed = sorted(STORED.keys() - CURRENT.keys())
    assert not missing, f"contracts without a snapshot {missing}: {MAKE_SNAPSHOTS}"
    assert not removed, f"contracts removed {removed}: a breaking change, stored ones must decode"


def test_snapshot_files_are_as_the_tool_writes_them() -> None:
    for path in sorted(snapshot.SCHEMAS_DIR.glob("*.json")):
        text = path.read_text("utf-8")
        written = snapshot.render(snapshot.shape(json.loads(text)))
        assert text == written, f"{path.name}: {MAKE_SNAPSHOTS}"


def test_tags_are_unique() -> None:
    tags = [tag_of(cls) for cls in contracts.ALL]
    assert sorted(t for t in set(tags) if tags.count(t) > 1) == []


@pytest.mark.parametrize("cls", contracts.ALL, ids=tag_of)
def test_tag_is_context_snake_name_and_version(cls: type[Message]) -> None:
    # A module's CONTEXT names its context when it is not the module's name (experiments: training).
    module = sys.modules[cls.__module__]
    context = getattr(module, "CONTEXT", cls.__module__.rsplit(".", 1)[-1])
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", re.sub(r"V\d+$", "", cls.__name__)).lower()
    assert re.fullmatch(rf"{context}\.{snake}\.v\d+", tag_of(cls)), tag_of(cls)


PAYLOADS = Path(__file__).with_name("payloads")

#: What each payload, as an older writer stored it, must read back as.
OLD_PAYLOADS: dict[str, tuple[type[Message], dict[str, Any]]] = {
    "project_created.v1.minimal.json": (
        ProjectCreated,
        {
            "project_id": "p-1",
            "name": "Cats and dogs",
            "description": "",
            "task_type": "classification",
            "correlation_id": "",
            "causation_id": None,
            "actor": "anonymous",
            "occurred_at": datetime(2024, 3, 1, 12, tzinfo=UTC),
        },
    ),
    "project_renamed.v1.offset.json": (
        ProjectRenamed,
        {"name": "Pets", "occurred_at": datetime(2024, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)},
    ),
    "project_description_updated.v1.full.json": (
        ProjectDescriptionUpdated,
        {"description": "Is it a cat?", "causation_id": "cmd-7", "actor": "ada"},
    ),
    # A field from a newer writer is ignored, so a rolling deploy can add defaulted fields.
    "project_archived.v1.newer_writer.json": (
        ProjectArchived,
        {"project_id": "p-1", "occurred_at": datetime(2024, 3, 3, 9, 15, tzinfo=UTC)},
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_PAYLOADS))
def test_stored_payload_decodes_with_defaults(name: str) -> None:
    expected_type, expected = OLD_PAYLOADS[name]
    event = msgspec.json.decode((PAYLOADS / name).read_bytes(), type=Event)
    assert type(event) is expected_type
    assert {field: getattr(event, field) for field in expected} == expected
    assert event.occurred_at.utcoffset() is not None


def test_every_stored_payload_is_checked() -> None:
    assert sorted(p.name for p in PAYLOADS.glob("*.json")) == sorted(OLD_PAYLOADS)

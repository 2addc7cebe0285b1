"""Tests of what ``contracts.snapshot`` counts as breaking, so the snapshot test can fail.

Each test compares the schemas of two throwaway Structs: the contract as it was, as it is now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import msgspec

from contracts import snapshot


class Inner(msgspec.Struct, frozen=True):
    size: int


class InnerGrown(msgspec.Struct, frozen=True):
    size: int
    unit: str = "px"


class InnerRetyped(msgspec.Struct, frozen=True):
    size: str


class Thing(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
    name: str
    count: int = 0
    description: str = ""
    inner: Inner | None = None


def changes(new: type[msgspec.Struct], old: type[msgspec.Struct] = Thing) -> list[str]:
    return snapshot.breaking_changes(msgspec.json.schema(old), msgspec.json.schema(new))


def test_the_same_contract_has_no_breaking_change() -> None:
    assert changes(Thing) == []


def test_a_removed_field_is_breaking() -> None:
    class Now(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str
        description: str = ""
        inner: Inner | None = None

    assert changes(Now) == ["removed property 'count'"]


def test_a_retyped_field_is_breaking() -> None:
    class Now(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str
        count: str = "0"
        description: int = 0  # a field named like a schema annotation is still compared
        inner: Inner | None = None

    found = changes(Now)
    assert [c.split(":")[0] for c in found] == [
        "property 'count' changed type",
        "property 'count' default changed",
        "property 'description' changed type",
        "property 'description' default changed",
    ]


def test_a_changed_default_is_breaking() -> None:
    class Now(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str
        count: int = 1  # older payloads without it would now replay as 1
        description: str = ""
        inner: Inner | None = None

    assert changes(Now) == ["property 'count' default changed: 0 -> 1"]


def test_a_narrowed_union_is_breaking_and_a_widened_one_is_not() -> None:
    class Widened(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str | None
        count: int | None = 0
        description: str = ""
        inner: Inner | None = None

    assert changes(Widened) == []
    assert changes(Thing, old=Widened) == [
        'property \'name\' changed type: {"anyOf":[{"type":"string"},{"type":"null"}]} -> '
        '{"type":"string"}',
        'property \'count\' changed type: {"anyOf":[{"type":"integer"},{"type":"null"}]} -> '
        '{"type":"integer"}',
    ]


def test_a_new_required_field_is_breaking_and_a_new_optional_one_is_not() -> None:
    class Required(Thing, frozen=True, kw_only=True, tag="test.thing.v1"):
        owner: str

    class Optional(Thing, frozen=True, tag="test.thing.v1"):
        owner: str = "nobody"

    assert changes(Required) == ["property 'owner' is new and required"]
    assert changes(Optional) == []


def test_a_changed_tag_is_breaking() -> None:
    class Now(Thing, frozen=True, tag="test.thing.v2"):
        pass

    assert changes(Now) == ["contract tag changed: test.thing.v1 -> test.thing.v2"]


def test_a_nested_struct_is_compared_field_by_field() -> None:
    class Grown(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str
        count: int = 0
        description: str = ""
        inner: InnerGrown | None = None

    class Retyped(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str
        count: int = 0
        description: str = ""
        inner: InnerRetyped | None = None

    assert changes(Grown) == []
    assert changes(Retyped) == [
        'property \'inner.size\' changed type: {"type":"integer"} -> {"type":"string"}'
    ]


def test_a_new_docstring_or_default_for_a_required_field_is_not_breaking() -> None:
    class Now(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        """A documented thing."""

        name: str = "unnamed"
        count: int = 0
        description: str = ""
        inner: Inner | None = None

    assert changes(Now) == []


def snapshot_dir(tmp_path: Path) -> Path:
    assert snapshot.main(["--write"], directory=tmp_path) == 0
    return tmp_path


def test_check_passes_on_a_fresh_snapshot(tmp_path: Path) -> None:
    assert snapshot.main([], directory=snapshot_dir(tmp_path)) == 0


def test_a_compatible_change_fails_the_check_until_it_is_written(tmp_path: Path) -> None:
    given = snapshot_dir(tmp_path)
    path = given / "projects.project_created.v1.json"
    schema = json.loads(path.read_text())
    del schema["$defs"]["ProjectCreated"]["properties"]["task_type"]  # as before it was added
    path.write_text(snapshot.render(schema))

    assert snapshot.main([], directory=given) == 1
    assert snapshot.main(["--write"], directory=given) == 0
    assert snapshot.main([], directory=given) == 0


def test_write_refuses_a_breaking_change_unless_allowed(tmp_path: Path) -> None:
    given = snapshot_dir(tmp_path)
    (given / "projects.project_deleted.v1.json").write_text("{}\n")  # a contract since removed

    assert snapshot.main([], directory=given) == 1
    assert snapshot.main(["--write"], directory=given) == 1
    assert (given / "projects.project_deleted.v1.json").exists()
    assert snapshot.main(["--write", "--allow-breaking"], directory=given) == 0
    assert not (given / "projects.project_deleted.v1.json").exists()


def documented(doc: str) -> type[msgspec.Struct]:
    class Thing(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: str

    Thing.__doc__ = doc
    return Thing


def test_a_reworded_docstring_changes_neither_the_snapshot_nor_the_check() -> None:
    before = msgspec.json.schema(documented("A thing.\n\n        Indented as one release does."))
    after = msgspec.json.schema(documented("A thing, reworded, rendered another way."))
    assert before != after  # the prose differs ...
    assert snapshot.shape(before) == snapshot.shape(after)  # ... the shape does not
    assert "A thing" not in json.dumps(snapshot.shape(before))
    assert snapshot.breaking_changes(before, after) == []


def test_the_snapshot_keeps_a_field_named_like_prose() -> None:
    kept = snapshot.shape(msgspec.json.schema(Thing))
    assert "description" in kept["$defs"]["Thing"]["properties"]


def test_the_committed_snapshot_holds_shapes_only() -> None:
    for tag, schema in snapshot.stored().items():
        assert schema == snapshot.shape(schema), tag
    for path in snapshot.SCHEMAS_DIR.glob("*.json"):
        raw = json.loads(path.read_text("utf-8"))
        assert raw == snapshot.shape(raw), f"{path.name} holds prose"


class Bounded(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
    name: Annotated[str, msgspec.Meta(max_length=64)]
    count: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    description: str = ""
    inner: Inner | None = None


def test_a_narrowed_bound_breaks_a_stored_event_but_not_a_command() -> None:
    event = snapshot.breaking_changes(msgspec.json.schema(Thing), msgspec.json.schema(Bounded))
    command = snapshot.breaking_changes(
        msgspec.json.schema(Thing), msgspec.json.schema(Bounded), stored=False
    )
    assert [c.split(":")[0] for c in event] == [
        "property 'name' changed type",
        "property 'count' changed type",
    ]
    assert command == []


def test_a_command_may_narrow_bounds_but_not_change_types() -> None:
    class Retyped(msgspec.Struct, frozen=True, tag_field="type", tag="test.thing.v1"):
        name: Annotated[int, msgspec.Meta(le=64)]
        count: int = 0
        description: str = ""
        inner: Inner | None = None

    found = snapshot.breaking_changes(
        msgspec.json.schema(Thing), msgspec.json.schema(Retyped), stored=False
    )
    assert found == ['property \'name\' changed type: {"type":"string"} -> {"type":"integer"}']


def test_only_events_are_stored_contracts() -> None:
    tags = snapshot.stored_tags()
    assert "projects.project_created.v1" in tags
    assert "projects.create_project.v1" not in tags
    assert "common.command_accepted.v1" not in tags


def test_a_list_of_structs_is_compared_item_by_item() -> None:
    class Listed(msgspec.Struct, frozen=True, tag_field="type", tag="test.list.v1"):
        items: list[Inner] = []

    class Grown(msgspec.Struct, frozen=True, tag_field="type", tag="test.list.v1"):
        items: list[InnerGrown] = []

    class Retyped(msgspec.Struct, frozen=True, tag_field="type", tag="test.list.v1"):
        items: list[InnerRetyped] = []

    assert changes(Grown, Listed) == []
    assert changes(Retyped, Listed) == [
        'property \'items[].size\' changed type: {"type":"integer"} -> {"type":"string"}'
    ]


def test_a_list_of_tuples_is_compared_whole() -> None:
    """A tuple's schema has ``"items": false`` (its members are ``prefixItems``): comparing a
    contract holding ``list[list[tuple[str, float]]]`` once crashed the checker."""

    class Pairs(msgspec.Struct, frozen=True, tag_field="type", tag="test.pairs.v1"):
        results: list[list[tuple[str, float]]]

    class PairsGrown(msgspec.Struct, frozen=True, tag_field="type", tag="test.pairs.v1"):
        results: list[list[tuple[str, float]]]
        task: str = "classification"

    class PairsRetyped(msgspec.Struct, frozen=True, tag_field="type", tag="test.pairs.v1"):
        results: list[list[tuple[str, int]]]

    assert changes(PairsGrown, Pairs) == []
    assert changes(PairsRetyped, Pairs) != []

"""The Dataset decider, given/when/then: imports commit whole, duplicates fold, splits decide."""

from __future__ import annotations

from functools import reduce

import msgspec
import pytest

from contracts import datasets as c
from services.datasets import domain

D = "ds1"


def record(n: int, label: str = "cat", phash: str | None = None) -> c.ImageRecord:
    return c.ImageRecord(
        image_id=f"{n:064x}",
        filename=f"{label}/{n}.png",
        label=label,
        width=32,
        height=32,
        size=100,
        format="PNG",
        phash=phash or f"{(n * 0x9E3779B97F4A7C15) & (2**64 - 1):016x}",
    )


def given(*events: c.Event) -> domain.Dataset:
    return reduce(domain.evolve, events, domain.Dataset())


def started(import_id: str = "i1") -> c.ImportStarted:
    return c.ImportStarted(
        dataset_id=D, import_id=import_id, source_kind="local", source="/x", format="auto"
    )


REPORT = c.ImportReport(format="folder", files=0, imported=0)


def test_an_import_commits_its_images_in_batches_then_its_completion():
    state = given(started())
    records = [record(n) for n in range(domain.IMAGES_PER_EVENT + 5)]
    events = domain.commit(state, D, "i1", records, REPORT)
    assert [type(e).__name__ for e in events] == ["ImagesAdded", "ImagesAdded", "ImportCompleted"]
    assert sum(len(e.images) for e in events[:2]) == len(records)
    assert events[-1].report.imported == len(records)
    after = reduce(domain.evolve, events, state)
    assert len(after.images) == len(records)
    assert after.imports["i1"] == "completed"


def test_byte_identical_files_are_kept_once_and_reported():
    # given an image already in the dataset
    state = given(
        started("i0"),
        c.ImagesAdded(dataset_id=D, import_id="i0", images=[record(1, "cat")]),
        c.ImportCompleted(dataset_id=D, import_id="i0", report=REPORT),
        started("i1"),
    )
    # when an import brings it again (as a dog) and brings one file twice
    twin = record(2, "dog")
    copy = msgspec.structs.replace(twin, filename="dog/copy.png")
    records = [record(1, "dog"), twin, copy]
    events = domain.commit(state, D, "i1", records, REPORT)
    # then only the new image is added, and both copies are reported with the kept label
    assert [r.image_id for r in events[0].images] == [twin.image_id]
    duplicates = events[-1].report.duplicates
    assert [(d.file, d.kept_label) for d in duplicates] == [
        ("dog/1.png", "cat"),
        ("dog/copy.png", "dog"),
    ]


def test_an_import_that_is_not_running_cannot_commit_or_fail():
    with pytest.raises(domain.NotFound):
        domain.commit(given(), D, "nope", [record(1)], REPORT)
    done = given(started(), c.ImportCompleted(dataset_id=D, import_id="i1", report=REPORT))
    with pytest.raises(domain.Conflict):
        domain.commit(done, D, "i1", [record(1)], REPORT)
    failed = c.ImportFailed(dataset_id=D, import_id="i1", code="X", message="m")
    with pytest.raises(domain.Conflict):
        domain.fail(done, failed)
    assert domain.fail(given(started()), failed) == [failed]


def test_an_import_id_is_used_once():
    command = c.StartImport(dataset_id=D, import_id="i1", source_kind="local", source="/x")
    assert isinstance(domain.start(given(), command, "me")[0], c.ImportStarted)
    with pytest.raises(domain.Conflict):
        domain.start(given(started()), command, "me")


def with_images(*records: c.ImageRecord) -> domain.Dataset:
    return given(started(), c.ImagesAdded(dataset_id=D, import_id="i1", images=list(records)))


def test_relabel_changes_the_label_and_a_same_label_is_no_change():
    state = with_images(record(1, "cat"))
    command = c.RelabelImage(dataset_id=D, image_id=record(1).image_id, label=" dog ")
    [event] = domain.relabel(state, command)
    assert (event.label, event.previous) == ("dog", "cat")
    same = c.RelabelImage(dataset_id=D, image_id=record(1).image_id, label="cat")
    assert domain.relabel(state, same) == []
    for bad in ("", "   ", "x" * 201, "a\nb"):
        with pytest.raises(domain.InvalidInput):
            domain.relabel(
                state, c.RelabelImage(dataset_id=D, image_id=record(1).image_id, label=bad)
            )
    with pytest.raises(domain.NotFound):
        domain.relabel(state, c.RelabelImage(dataset_id=D, image_id="f" * 64, label="x"))


def test_delete_removes_an_image():
    state = with_images(record(1), record(2))
    [event] = domain.delete(state, c.DeleteImage(dataset_id=D, image_id=record(1).image_id))
    assert list(domain.evolve(state, event).images) == [record(2).image_id]
    with pytest.raises(domain.NotFound):
        domain.delete(state, c.DeleteImage(dataset_id=D, image_id="f" * 64))


def split(name: str = "s", **ratios: float) -> c.CreateSplit:
    r = {"train": 0.6, "val": 0.2, "test": 0.2} | ratios
    return c.CreateSplit(dataset_id=D, split_id=f"id-{name}", name=name, seed=1, **r)


def test_a_split_assigns_every_image_once_with_counts_and_a_recipe_hash():
    state = with_images(
        *[record(n, "cat") for n in range(10)], *[record(n, "dog") for n in range(10, 20)]
    )
    created, assigned = domain.create_split(state, split())
    assert created.images == 20
    assert created.counts["train"] == {"cat": 6, "dog": 6}
    assert sorted(assigned.assignment) == sorted(state.images)
    again, _ = domain.create_split(state, split("other"))
    assert again.recipe_hash == created.recipe_hash


def test_split_refusals():
    state = with_images(record(1), record(2))
    with pytest.raises(domain.InvalidInput) as empty:
        domain.create_split(given(), split())
    assert empty.value.field == "dataset"
    with pytest.raises(domain.InvalidInput) as bad_sum:
        domain.create_split(state, split(train=0.9))
    assert bad_sum.value.field == "ratios"
    with pytest.raises(domain.InvalidInput):
        domain.create_split(state, split())  # two images cannot fill three subsets
    named = reduce(
        domain.evolve, domain.create_split(state, split(train=0.5, val=0.5, test=0)), state
    )
    with pytest.raises(domain.Conflict):
        domain.create_split(named, split(train=0.5, val=0.5, test=0))
    with pytest.raises(domain.InvalidInput):
        domain.create_split(state, split(" "))

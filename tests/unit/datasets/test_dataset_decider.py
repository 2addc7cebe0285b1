"""The Dataset decider, given/when/then: imports commit whole, duplicates fold, splits decide."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from contracts import datasets as c
from services.datasets import domain
from tests.scenario import Decider, Scenario

#: A per-command function of the decider, applied to the state it is given.
Decision = Callable[[domain.Dataset], list[c.Event]]

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


DATASET: Decider[domain.Dataset, c.Command, c.Event] = Decider(
    evolve=domain.evolve, initial=domain.Dataset()
)
given = DATASET.given


def started(import_id: str = "i1") -> c.ImportStarted:
    return c.ImportStarted(
        dataset_id=D, import_id=import_id, source_kind="local", source="/x", format="auto"
    )


REPORT = c.ImportReport(format="folder", files=0, imported=0)


def committing(import_id: str, records: list[c.ImageRecord]) -> Decision:
    return lambda state: domain.commit(state, D, import_id, records, REPORT)


def test_an_import_commits_its_images_in_batches_then_its_completion():
    records = [record(n) for n in range(domain.IMAGES_PER_EVENT + 5)]
    import_ = given(started()).when(committing("i1", records))
    events = import_.decided()
    assert [type(e).__name__ for e in events] == ["ImagesAdded", "ImagesAdded", "ImportCompleted"]
    assert sum(len(e.images) for e in events[:2]) == len(records)
    assert events[-1].report.imported == len(records)
    after = import_.after()
    assert len(after.images) == len(records)
    assert after.imports["i1"] == "completed"


def test_byte_identical_files_are_kept_once_and_reported():
    # given an image already in the dataset
    history = (
        started("i0"),
        c.ImagesAdded(dataset_id=D, import_id="i0", images=[record(1, "cat")]),
        c.ImportCompleted(dataset_id=D, import_id="i0", report=REPORT),
        started("i1"),
    )
    # when an import brings it again (as a dog) and brings one file twice
    twin = record(2, "dog")
    copy = msgspec.structs.replace(twin, filename="dog/copy.png")
    events = given(*history).when(committing("i1", [record(1, "dog"), twin, copy])).decided()
    # then only the new image is added, and both copies are reported with the kept label
    assert [r.image_id for r in events[0].images] == [twin.image_id]
    duplicates = events[-1].report.duplicates
    assert [(d.file, d.kept_label) for d in duplicates] == [
        ("dog/1.png", "cat"),
        ("dog/copy.png", "dog"),
    ]


def test_an_import_that_is_not_running_cannot_commit_or_fail():
    given().when(committing("nope", [record(1)])).then_refused(domain.ImportNotFound)
    done = (started(), c.ImportCompleted(dataset_id=D, import_id="i1", report=REPORT))
    given(*done).when(committing("i1", [record(1)])).then_refused(domain.ImportNotRunning)
    failed = c.ImportFailed(dataset_id=D, import_id="i1", code="X", message="m")
    given(*done).when(lambda state: domain.fail(state, failed)).then_refused(
        domain.ImportNotRunning
    )
    given(started()).when(lambda state: domain.fail(state, failed)).then(failed)


def test_an_import_id_is_used_once():
    command = c.StartImport(dataset_id=D, import_id="i1", source_kind="local", source="/x")
    start = given().when(lambda state: domain.start(state, command, "me"))
    start.then(msgspec.structs.replace(started(), instance="me"))
    given(started()).when(lambda state: domain.start(state, command, "me")).then_refused(
        domain.ImportAlreadyExists
    )


def with_images(*records: c.ImageRecord) -> Scenario[domain.Dataset, c.Command, c.Event]:
    return given(started(), c.ImagesAdded(dataset_id=D, import_id="i1", images=list(records)))


def relabel(label: str, image_id: str = record(1).image_id) -> Decision:
    command = c.RelabelImage(dataset_id=D, image_id=image_id, label=label)
    return lambda state: domain.relabel(state, command)


def test_relabel_changes_the_label_and_a_same_label_is_no_change():
    cat = with_images(record(1, "cat"))
    cat.when(relabel(" dog ")).then(
        c.ImageRelabeled(dataset_id=D, image_id=record(1).image_id, label="dog", previous="cat")
    )
    cat.when(relabel("cat")).then()
    for bad in ("", "   ", "x" * 201, "a\nb"):
        cat.when(relabel(bad)).then_refused(domain.InvalidLabel, field="label")
    cat.when(relabel("x", image_id="f" * 64)).then_refused(domain.ImageNotFound)


def delete(image_id: str) -> Decision:
    return lambda state: domain.delete(state, c.DeleteImage(dataset_id=D, image_id=image_id))


def test_delete_removes_an_image():
    two = with_images(record(1), record(2))
    deleting = two.when(delete(record(1).image_id))
    deleting.then(c.ImageDeleted(dataset_id=D, image_id=record(1).image_id))
    assert list(deleting.after().images) == [record(2).image_id]
    two.when(delete("f" * 64)).then_refused(domain.ImageNotFound)


def split(name: str = "s", **ratios: float) -> Decision:
    r = {"train": 0.6, "val": 0.2, "test": 0.2} | ratios
    command = c.CreateSplit(dataset_id=D, split_id=f"id-{name}", name=name, seed=1, **r)
    return lambda state: domain.create_split(state, command)


def test_a_split_assigns_every_image_once_with_counts_and_a_recipe_hash():
    images = with_images(
        *[record(n, "cat") for n in range(10)], *[record(n, "dog") for n in range(10, 20)]
    )
    created, assigned = images.when(split()).decided()
    assert created.images == 20
    assert created.counts["train"] == {"cat": 6, "dog": 6}
    assert sorted(assigned.assignment) == sorted(images.state.images)
    again, _ = images.when(split("other")).decided()
    assert again.recipe_hash == created.recipe_hash


def test_split_refusals():
    two = with_images(record(1), record(2))
    given().when(split()).then_refused(domain.InvalidSplit, field="dataset")
    two.when(split(train=0.9)).then_refused(domain.InvalidSplit, field="ratios")
    # two images cannot fill three subsets
    two.when(split()).then_refused(domain.InvalidSplit, field="ratios")
    halves = split(train=0.5, val=0.5, test=0)
    named = given(*two.history, *two.when(halves).decided())
    named.when(halves).then_refused(domain.SplitAlreadyExists)
    two.when(split(" ")).then_refused(domain.InvalidSplit, field="name")


def delete_split(split_id: str) -> Decision:
    command = c.DeleteSplit(dataset_id=D, split_id=split_id)
    return lambda state: domain.decide(state, command)


HALVES = split(train=0.5, val=0.5, test=0)


def with_split() -> Scenario[domain.Dataset, c.Command, c.Event]:
    """Two images and a split of them named "s" (id ``id-s``)."""
    two = with_images(record(1), record(2))
    return given(*two.history, *two.when(HALVES).decided())


def test_deleting_a_split_frees_its_name():
    deleting = with_split().when(delete_split("id-s"))
    deleting.then(c.SplitDeleted(dataset_id=D, split_id="id-s"))
    assert deleting.after().splits == {}
    again = given(*deleting.history, *deleting.decided()).when(HALVES).decided()
    assert [type(e).__name__ for e in again] == ["SplitCreated", "SplitAssigned"]


def test_an_unknown_or_deleted_split_cannot_be_deleted():
    given().when(delete_split("id-s")).then_refused(domain.SplitNotFound)
    with_split().when(delete_split("id-other")).then_refused(domain.SplitNotFound)
    gone = given(*with_split().history, c.SplitDeleted(dataset_id=D, split_id="id-s"))
    gone.when(delete_split("id-s")).then_refused(domain.SplitNotFound)


def test_decide_dispatches_each_edit_to_its_rule():
    cat = with_images(record(1, "cat"))
    relabel_ = c.RelabelImage(dataset_id=D, image_id=record(1).image_id, label="dog")
    cat.when(lambda state: domain.decide(state, relabel_)).then(
        c.ImageRelabeled(dataset_id=D, image_id=record(1).image_id, label="dog", previous="cat")
    )
    delete_ = c.DeleteImage(dataset_id=D, image_id=record(1).image_id)
    cat.when(lambda state: domain.decide(state, delete_)).then(
        c.ImageDeleted(dataset_id=D, image_id=record(1).image_id)
    )

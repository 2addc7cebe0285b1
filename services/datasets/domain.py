"""The Dataset aggregate as a pure decider: its images, its imports and its splits.

An import is decided twice: ``start`` records that it runs; ``commit`` turns the files it read
into events, folding byte-identical files into one image and reporting them, and is stored as
one atomic batch, so an import is kept whole or not at all.

Neither what an import read nor the dataset's image index need be in memory: the decider reads
them through two ports, ``ImageIndex`` (a mapping the dataset's events keep; ``MemoryIndex``
here, SQLite in ``spill``) and ``Staged`` (an import's records in file order), and ``commit``
answers a lazy sequence of events that reads its records batch by batch as they are stored.
Imports ``contracts``, the pure ``splits`` and ``imageindex`` modules and the kernel's
``DomainError`` only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import msgspec

from contracts import datasets as c
from services.datasets import splits as splitting
from services.datasets.imageindex import (
    IMAGES_PER_EVENT,
    Image,
    ImageIndex,
    ImportEvents,
    MemoryIndex,
    MemoryStaged,
    Staged,
)
from services.kernel.domain import Conflict, InvalidInput, NotFound
from services.kernel.jobs import Lifecycle

#: Assignments per ``SplitAssigned`` event.
ASSIGNMENTS_PER_EVENT = 20_000
__all__ = ["IMAGES_PER_EVENT", "Image", "ImageIndex", "MemoryIndex", "Staged"]
TERMINAL = ("completed", "failed")


@dataclass(frozen=True)
class Dataset:
    images: ImageIndex = field(default_factory=MemoryIndex)
    imports: dict[str, str] = field(default_factory=dict)  # import id → running|completed|failed
    splits: dict[str, str] = field(default_factory=dict)  # split name → split id
    #: What imports found and did not keep, for the health report.
    duplicates: tuple[c.DuplicateRecord, ...] = ()
    corrupt: tuple[c.FileProblem, ...] = ()
    #: How many of each there were: a report lists only its first (``c.REPORT_LISTED``).
    duplicates_total: int = 0
    corrupt_total: int = 0


class ProjectNotFound(NotFound):
    """The dataset's project does not exist."""


class ProjectIsArchived(Conflict):
    """An archived project's dataset is read-only until it is restored."""


class InvalidImport(InvalidInput):
    """An import's format, source or uploaded file that cannot be imported."""


class ImportAlreadyExists(Conflict):
    """Another import already has that id."""


class ImportNotFound(NotFound):
    """No import of this dataset has that id."""


class ImportNotRunning(Conflict):
    """The import has already completed or failed."""


class ImageNotFound(NotFound):
    """No image of this dataset has that id."""


class InvalidLabel(InvalidInput):
    """A label an image cannot have."""


class InvalidSplit(InvalidInput):
    """A split's name or ratios, or a dataset, that no split can be made of."""


class SplitAlreadyExists(Conflict):
    """Another split of the dataset has that name."""


class SplitNotFound(NotFound):
    """No split of this dataset has that id (or it was deleted)."""


#: An import's lifecycle, the kernel's job decider, with the dataset's own refusals.
IMPORT = Lifecycle(
    *c.IMPORT_JOB,
    exists=ImportAlreadyExists,
    unknown=ImportNotFound,
    not_running=ImportNotRunning,
)


def start(state: Dataset, command: c.StartImport, instance: str) -> list[c.Event]:
    started = c.ImportStarted(
        dataset_id=command.dataset_id,
        import_id=command.import_id,
        source_kind=command.source_kind,
        source=command.source,
        format=command.format,
        instance=instance,
    )
    return IMPORT.start(state.imports.get(command.import_id), started)


def running(state: Dataset, import_id: str) -> None:
    IMPORT.running(state.imports.get(import_id), import_id)


def commit(
    state: Dataset,
    dataset_id: str,
    import_id: str,
    records: Sequence[c.ImageRecord] | Staged,
    report: c.ImportReport,
) -> Sequence[c.Event]:
    """The import's images, less byte-identical copies (reported), then its completion: a
    lazy sequence, each batch read from ``records`` when it is stored."""
    running(state, import_id)
    staged = records if isinstance(records, Staged) else MemoryStaged(records)
    kept, duplicates = staged.plan(state.images)
    final = replace_report(report, imported=kept, duplicates=[*report.duplicates, *duplicates])
    return ImportEvents(staged, dataset_id, import_id, kept, final)


def replace_report(report: c.ImportReport, **changes: object) -> c.ImportReport:
    return msgspec.structs.replace(report, **changes)


def fail(state: Dataset, command: c.ImportFailed) -> list[c.Event]:
    return IMPORT.finish(state.imports.get(command.import_id), command)


def relabel(state: Dataset, command: c.RelabelImage) -> list[c.Event]:
    image = _image(state, command.image_id)
    label = valid_label(command.label)
    if label == image.label:
        return []
    return [
        c.ImageRelabeled(
            dataset_id=command.dataset_id,
            image_id=command.image_id,
            label=label,
            previous=image.label,
        )
    ]


def delete(state: Dataset, command: c.DeleteImage) -> list[c.Event]:
    _image(state, command.image_id)
    return [c.ImageDeleted(dataset_id=command.dataset_id, image_id=command.image_id)]


#: The commands decided against the stored dataset alone, with no check outside it: each comes
#: through one handler, so a new one needs only its arm below and its row in ``app``.
Edit = c.RelabelImage | c.DeleteImage | c.DeleteSplit


def decide(state: Dataset, command: Edit) -> list[c.Event]:
    match command:
        case c.RelabelImage():
            return relabel(state, command)
        case c.DeleteImage():
            return delete(state, command)
        case c.DeleteSplit():
            return delete_split(state, command)


def create_split(
    state: Dataset, command: c.CreateSplit, task: str = "classification"
) -> list[c.Event]:
    """A detection project's images are stratified by the classes their boxes show."""
    name = _split_name(state, command.name)
    ratios = (command.train, command.val, command.test)
    items, made = _assign(state, ratios, command.strategy, command.seed, task == "detection")
    labels = {item.image_id: item.label for item in items}
    created = c.SplitCreated(
        dataset_id=command.dataset_id,
        split_id=command.split_id,
        name=name,
        strategy=command.strategy,
        ratios=dict(zip(c.SUBSETS, ratios, strict=True)),
        seed=command.seed,
        images=len(made.assignment),
        groups=len({item.group for item in items}),
        counts=_counts(labels, made.assignment),
        recipe_hash=splitting.recipe_hash(made.assignment),
        deviations=[
            c.SplitDeviation(d.label, d.subset, d.expected, d.actual, d.reason)
            for d in made.deviations
        ],
    )
    return [created, *_assignment_parts(command, made.assignment)]


def _split_name(state: Dataset, asked: str) -> str:
    name = asked.strip()
    if not name or len(name) > c.SPLIT_NAME_MAX:
        raise InvalidSplit(f"name must be 1 to {c.SPLIT_NAME_MAX} characters", field="name")
    if name in state.splits:
        raise SplitAlreadyExists(f"a split named {name!r} already exists")
    return name


def _assign(
    state: Dataset, ratios: tuple[float, float, float], strategy: str, seed: int, boxed: bool
) -> tuple[list[splitting.SplitItem], splitting.Split]:
    """The dataset's images, near-duplicates grouped, and the subset each one goes to."""
    try:
        splitting.validate_ratios(ratios)
        items = splitting.group_duplicates(
            [
                splitting.SplitItem(
                    i, img.label, img.near_hash, None, img.classes if boxed else None
                )
                for i, img in state.images.items()
            ]
        )
        if not items:
            raise InvalidSplit("the dataset has no images to split", field="dataset")
        return items, splitting.split(items, ratios, strategy, seed)
    except splitting.SplitError as err:
        raise InvalidSplit(err.message, field=err.field) from None


def _counts(labels: Mapping[str, str], assignment: dict[str, str]) -> dict[str, dict[str, int]]:
    """Images per label in each subset, labels sorted."""
    counts: dict[str, dict[str, int]] = {s: {} for s in c.SUBSETS}
    for image_id, subset in assignment.items():
        label = labels[image_id]
        counts[subset][label] = counts[subset].get(label, 0) + 1
    return {s: dict(sorted(n.items())) for s, n in counts.items()}


def _assignment_parts(command: c.CreateSplit, assignment: dict[str, str]) -> list[c.Event]:
    """The assignment, in image-id order, cut into events of ``ASSIGNMENTS_PER_EVENT``."""
    ordered = sorted(assignment.items())
    return [
        c.SplitAssigned(
            dataset_id=command.dataset_id,
            split_id=command.split_id,
            part=n,
            assignment=dict(ordered[i : i + ASSIGNMENTS_PER_EVENT]),
        )
        for n, i in enumerate(range(0, len(ordered), ASSIGNMENTS_PER_EVENT))
    ]


def delete_split(state: Dataset, command: c.DeleteSplit) -> list[c.Event]:
    # Whether a run uses the split is the gateway's to check: runs are not this aggregate's.
    if command.split_id not in state.splits.values():
        raise SplitNotFound(f"split {command.split_id} is not in this dataset")
    return [c.SplitDeleted(dataset_id=command.dataset_id, split_id=command.split_id)]


def evolve(state: Dataset, event: c.Event) -> Dataset:
    match event:
        case c.ImportStarted():
            return _import(state, event)
        case c.ImagesAdded():
            return replace(state, images=state.images.with_added(event.images))
        case c.ImportCompleted():
            return replace(
                _import(state, event),
                duplicates=(*state.duplicates, *event.report.duplicates),
                corrupt=(*state.corrupt, *event.report.corrupt),
                duplicates_total=state.duplicates_total + event.report.duplicates_total,
                corrupt_total=state.corrupt_total + event.report.corrupt_total,
            )
        case c.ImportFailed():
            return _import(state, event)
        case c.ImageRelabeled():
            return replace(state, images=state.images.with_label(event.image_id, event.label))
        case c.ImageDeleted():
            return replace(state, images=state.images.without(event.image_id))
        case c.SplitCreated():
            return replace(state, splits={**state.splits, event.name: event.split_id})
        case c.SplitDeleted():  # its name is free again
            kept = {name: i for name, i in state.splits.items() if i != event.split_id}
            return replace(state, splits=kept)
    return state


def _import(state: Dataset, event: c.Event) -> Dataset:
    """The dataset with an import's status after ``event`` (its start or its outcome)."""
    import_id = IMPORT.job_id(event)
    status = IMPORT.evolve(state.imports.get(import_id), event)
    if status is None:  # an outcome with no start before it changes nothing
        return state
    return replace(state, imports={**state.imports, import_id: status})


def valid_label(raw: str) -> str:
    label = unicodedata.normalize("NFC", raw).strip()
    if not label or len(label) > c.LABEL_MAX:
        raise InvalidLabel(f"label must be 1 to {c.LABEL_MAX} characters", field="label")
    if any(unicodedata.category(ch) == "Cc" for ch in label):
        raise InvalidLabel("label must not contain control characters", field="label")
    return label


def _image(state: Dataset, image_id: str) -> Image:
    image = state.images.get(image_id)
    if image is None:
        raise ImageNotFound(f"image {image_id} is not in this dataset")
    return image

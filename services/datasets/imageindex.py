"""The ports through which the Dataset decider reads its images, and their in-memory forms.

``ImageIndex`` is a dataset's images by id, as its events leave them; ``Staged`` is what an
import read, in file order; ``ImportEvents`` is an import's commit as a lazy sequence of events
that reads its records batch by batch while they are stored, so that no import and no dataset
has to be in memory whole (``spill`` keeps both in SQLite). Pure: imports ``contracts`` and
msgspec (to size records) only.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, overload, runtime_checkable

import msgspec

from contracts import datasets as c

#: Images per ``ImagesAdded`` event: keeps each stored message well under NATS's payload limit.
IMAGES_PER_EVENT = 1000
#: Encoded record bytes per ``ImagesAdded`` event at most (half NATS's 8 MB payload limit): a
#: detection image may carry hundreds of boxes, so a batch of those ends before 1000 images.
EVENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Image:
    filename: str
    label: str
    phash: str
    width: int
    height: int
    near_hash: str = ""  # "" for images imported before near hashes existed
    boxes: tuple[c.Box, ...] = ()  # its bounding boxes, as imported

    @property
    def classes(self) -> frozenset[str]:
        """The classes its boxes show (a detection image's labels for stratified splits)."""
        return frozenset(box.label for box in self.boxes)


def image_of(record: c.ImageRecord) -> Image:
    r = record
    return Image(r.filename, r.label, r.phash, r.width, r.height, r.near_hash, tuple(r.boxes))


class ImageIndex(Mapping[str, Image]):
    """A dataset's images by id, iterated in id order; changed only by folding its events,
    each change answering the index after it (a copy, or the same store written on)."""

    @abstractmethod
    def with_added(self, records: Sequence[c.ImageRecord]) -> ImageIndex: ...

    @abstractmethod
    def with_label(self, image_id: str, label: str) -> ImageIndex: ...

    @abstractmethod
    def without(self, image_id: str) -> ImageIndex: ...


class MemoryIndex(ImageIndex):
    """The index as an immutable dict: for tests and small tools."""

    def __init__(self, images: Mapping[str, Image] | None = None) -> None:
        self._images = dict(images or {})

    def __getitem__(self, image_id: str) -> Image:
        return self._images[image_id]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._images))

    def __len__(self) -> int:
        return len(self._images)

    def with_added(self, records: Sequence[c.ImageRecord]) -> ImageIndex:
        return MemoryIndex({**self._images, **{r.image_id: image_of(r) for r in records}})

    def with_label(self, image_id: str, label: str) -> ImageIndex:
        return MemoryIndex({**self._images, image_id: replace(self._images[image_id], label=label)})

    def without(self, image_id: str) -> ImageIndex:
        return MemoryIndex({i: img for i, img in self._images.items() if i != image_id})


@runtime_checkable
class Staged(Protocol):
    """What an import read, in file order. ``plan`` sorts it against the dataset's index
    (first copy of each file kept unless the dataset has it; the rest reported) and may be
    asked again; ``kept`` then reads the kept records, ``start`` to ``stop`` of them."""

    def plan(self, index: Mapping[str, Image]) -> tuple[int, list[c.DuplicateRecord]]: ...

    def kept(self, start: int, stop: int) -> list[c.ImageRecord]: ...

    def sizes(self) -> Iterator[int]:
        """Each kept record's encoded size in bytes, in order (after ``plan``)."""
        ...


def batches(sizes: Iterable[int], images: int, limit: int) -> list[tuple[int, int]]:
    """(start, stop) of each event's records: at most ``images`` of them and, but for a single
    record, at most ``limit`` bytes."""
    bounds, start, n, size = [], 0, 0, 0
    for n, one in enumerate(sizes):
        if n > start and (n - start == images or size + one > limit):
            bounds.append((start, n))
            start, size = n, 0
        size += one
    if n + 1 > start and size:
        bounds.append((start, n + 1))
    return bounds


class MemoryStaged:
    """``Staged`` over a list of records."""

    def __init__(self, records: Sequence[c.ImageRecord]) -> None:
        self.records, self._kept = records, list[c.ImageRecord]()

    def plan(self, index: Mapping[str, Image]) -> tuple[int, list[c.DuplicateRecord]]:
        kept: dict[str, c.ImageRecord] = {}
        duplicates = []
        for record in self.records:
            first, known = kept.get(record.image_id), index.get(record.image_id)
            if first is None and known is None:
                kept[record.image_id] = record
                continue
            kept_label = first.label if first is not None else known.label  # type: ignore[union-attr]
            duplicates.append(
                c.DuplicateRecord(record.filename, record.label, record.image_id, kept_label)
            )
        self._kept = list(kept.values())
        return len(self._kept), duplicates

    def kept(self, start: int, stop: int) -> list[c.ImageRecord]:
        return self._kept[start:stop]

    def sizes(self) -> Iterator[int]:
        return (len(msgspec.json.encode(record)) for record in self._kept)


class ImportEvents(Sequence[c.Event]):
    """An import's ``ImagesAdded`` batches then its ``ImportCompleted``, each made when read."""

    def __init__(self, staged: Staged, dataset_id: str, import_id: str, kept: int,
                 report: c.ImportReport) -> None:  # fmt: skip
        self.staged, self.dataset_id, self.import_id = staged, dataset_id, import_id
        self.bounds = batches(staged.sizes(), IMAGES_PER_EVENT, EVENT_BYTES) if kept else []
        self.batches = len(self.bounds)
        self.report = report

    def __len__(self) -> int:
        return self.batches + 1

    @overload
    def __getitem__(self, i: int) -> c.Event: ...
    @overload
    def __getitem__(self, i: slice) -> list[c.Event]: ...
    def __getitem__(self, i: int | slice) -> c.Event | list[c.Event]:
        if isinstance(i, slice):
            return [self[n] for n in range(*i.indices(len(self)))]
        n = i + len(self) if i < 0 else i
        if not 0 <= n < len(self):
            raise IndexError(i)
        if n == self.batches:
            return c.ImportCompleted(
                dataset_id=self.dataset_id, import_id=self.import_id, report=self.report
            )
        images = self.staged.kept(*self.bounds[n])
        return c.ImagesAdded(dataset_id=self.dataset_id, import_id=self.import_id, images=images)

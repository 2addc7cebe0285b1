"""The datasets service's queries that others read a dataset by: a split's subsets, page by
page, and an image's or thumbnail's bytes, piece by piece.

Read-your-writes: a query first asks the event store for the dataset's last position and folds
whatever it has not seen yet, so a split made (or an image deleted) a moment ago is in the very
next answer; a cache of recently read datasets makes each further page a position check only.
Pages and pieces are bounded (``SUBSET_PAGE_MAX`` items, ``BLOB_CHUNK_MAX`` bytes), so an
answer stays well under NATS's payload limit whatever the dataset's size.

Imports ``contracts`` and kernel ports; the event store and the blob store are passed in.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from contracts import common
from contracts import datasets as c
from contracts.common import CommandRejected
from services.kernel.eventstore import StoredEvent

#: Datasets whose view is kept between queries (a training pages through one at a time).
CACHED_DATASETS = 8


class Events(Protocol):
    async def version(self, aggregate_id: str) -> int: ...

    async def load(self, aggregate_id: str, after: int = 0) -> list[StoredEvent[c.Event]]: ...


class Files(Protocol):
    def blob_path(self, sha256: str) -> Path: ...

    def thumb_path(self, sha256: str) -> Path: ...


@dataclass
class SubsetView:
    """Each image's label and each split's assignment, folded from the dataset's events."""

    labels: dict[str, str] = field(default_factory=dict)  # image id → label
    #: image id → its boxes, for the images that have any (a detection dataset's).
    boxes: dict[str, list[c.Box]] = field(default_factory=dict)
    splits: dict[str, dict[str, str]] = field(default_factory=dict)  # split → image → subset
    #: (split, subset) → its image ids, sorted: built on first read, dropped when the split moves.
    _sorted: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def apply(self, event: c.Event) -> None:
        match event:
            case c.ImagesAdded():
                self.labels.update((r.image_id, r.label) for r in event.images)
                self.boxes.update((r.image_id, r.boxes) for r in event.images if r.boxes)
            case c.ImageRelabeled():
                self.labels[event.image_id] = event.label
            case c.ImageDeleted():
                self.labels.pop(event.image_id, None)
                self.boxes.pop(event.image_id, None)
            case c.SplitCreated():
                self._moved(event.split_id)
                self.splits[event.split_id] = {}
            case c.SplitAssigned():
                self._moved(event.split_id)
                self.splits.setdefault(event.split_id, {}).update(event.assignment)
            case c.SplitDeleted():  # a run queued on it from now on is refused as unknown
                self._moved(event.split_id)
                self.splits.pop(event.split_id, None)

    def page(
        self, split_id: str, subset: str, after: str, limit: int
    ) -> tuple[list[c.SubsetItem], str | None] | None:
        """The subset's images after ``after``, in image id order, and the ``after`` of the
        next page (None: this is the last); None when the dataset has no such split."""
        members = self.splits.get(split_id)
        if members is None:
            return None
        ids = self._ids(split_id, subset, members)
        items: list[c.SubsetItem] = []
        size = 0
        for image_id in ids[bisect.bisect_right(ids, after) :]:
            label = self.labels.get(image_id)
            if label is None:  # deleted since the split was made
                continue
            boxes = self.boxes.get(image_id, [])
            size += item_bytes(label, boxes)
            if len(items) == limit or (items and size > c.SUBSET_PAGE_BYTES):
                return items, items[-1].image_id
            items.append(c.SubsetItem(image_id=image_id, label=label, blob=image_id, boxes=boxes))
        return items, None

    def _ids(self, split_id: str, subset: str, members: dict[str, str]) -> list[str]:
        key = (split_id, subset)
        if key not in self._sorted:
            self._sorted[key] = sorted(i for i, s in members.items() if s == subset)
        return self._sorted[key]

    def _moved(self, split_id: str) -> None:
        for subset in c.SUBSETS:
            self._sorted.pop((split_id, subset), None)


def item_bytes(label: str, boxes: list[c.Box]) -> int:
    """An upper bound of a ``SubsetItem``'s JSON: its two ids and fields, and each box's five
    numbers (at most ~25 characters each) and label (4 bytes a character at most in UTF-8)."""
    return 200 + 4 * len(label) + sum(160 + 4 * len(box.label) for box in boxes)


class Queries:
    """Answers ``GetSubset`` and ``GetBlob`` from the dataset's events and blob store."""

    def __init__(self, events: Events, files: Files, cached: int = CACHED_DATASETS) -> None:
        self.events, self.files, self.cached = events, files, cached
        self._views: OrderedDict[str, tuple[SubsetView, int]] = OrderedDict()
        self._locks: dict[str, _Refresh] = {}

    async def get_subset(
        self, query: c.GetSubset, headers: Mapping[str, str]
    ) -> c.SubsetPage | CommandRejected:
        view = await self.view(query.dataset_id)
        page = view.page(query.split_id, query.subset, query.after, query.limit)
        if page is None:
            return CommandRejected(
                code=common.NOT_FOUND,
                message=f"split {query.split_id} does not exist in this dataset",
                field="split_id",
            )
        items, next_after = page
        return c.SubsetPage(
            dataset_id=query.dataset_id,
            split_id=query.split_id,
            subset=query.subset,
            items=items,
            next=next_after,
            correlation_id=query.correlation_id,
        )

    async def get_blob(
        self, query: c.GetBlob, headers: Mapping[str, str]
    ) -> c.BlobChunk | CommandRejected:
        view = await self.view(query.dataset_id)
        if query.image_id not in view.labels:
            return _missing(f"image {query.image_id} is not in this dataset")
        try:
            data, size = await asyncio.to_thread(self._read, query)
        except (FileNotFoundError, ValueError):  # ValueError: an id that is no sha256
            return _missing(f"the {query.kind}'s file is missing from the store")
        return c.BlobChunk(
            dataset_id=query.dataset_id,
            image_id=query.image_id,
            kind=query.kind,
            offset=query.offset,
            size=size,
            data=data,
            correlation_id=query.correlation_id,
        )

    def _read(self, query: c.GetBlob) -> tuple[bytes, int]:
        if query.kind == "thumbnail":
            path = self.files.thumb_path(query.image_id)
        else:
            path = self.files.blob_path(query.image_id)
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(min(query.offset, size))
            return file.read(query.limit), size

    async def view(self, dataset_id: str) -> SubsetView:
        """The dataset as its stream holds it now (one position check when nothing changed).

        Queries arriving together share one check: a query that finds a check under way waits
        for it, and takes the view of the next check, or of any check that began after it
        arrived (all it needs to see what was stored before it arrived), so a trainer
        fetching many images at once costs a few checks, not one each, one after another."""
        refresh = self._locks.setdefault(dataset_id, _Refresh())
        arrived = refresh.started
        async with refresh.lock:
            if refresh.done > arrived and dataset_id in self._views:
                self._views.move_to_end(dataset_id)
                return self._views[dataset_id][0]
            refresh.started += 1
            view = await self._refreshed(dataset_id)
            refresh.done = refresh.started
            return view

    async def _refreshed(self, dataset_id: str) -> SubsetView:
        """Checks the position, and folds what is new into the kept view."""
        last = await self.events.version(dataset_id)
        view, seen = self._views.get(dataset_id, (SubsetView(), 0))
        if seen > last:  # cannot happen with an append-only stream; start over if it does
            view, seen = SubsetView(), 0
        if seen != last:
            for stored in await self.events.load(dataset_id, after=seen):
                view.apply(stored.event)
                seen = stored.sequence
        self._views[dataset_id] = (view, seen)
        self._views.move_to_end(dataset_id)
        while len(self._views) > self.cached:  # (its lock stays: someone may wait on it)
            self._views.popitem(last=False)
        return view


@dataclass
class _Refresh:
    """One dataset's position checks: one at a time, counted as they start and end."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: int = 0
    done: int = 0


def _missing(message: str) -> CommandRejected:
    return CommandRejected(code=common.NOT_FOUND, message=message)

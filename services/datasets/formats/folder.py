"""Reads a dataset laid out as one folder of images per class, optionally inside train/, val/
and test/ folders.

Each image's place is its own path (``place``), so the folder reader streams: ``stream_folder``
walks the source one folder at a time and hands its entries on in batches, in name order,
holding only the problems it reports and the class names. Imports ``manifest``, ``tree`` and
``labels`` beside it; opens no file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.datasets.formats.labels import sorted_problems, unsupported
from services.datasets.formats.manifest import Entry, Manifest, Problem, split_name
from services.datasets.formats.tree import File, Tree, walk

#: Entries handed on at a time.
BATCH = 512
#: Takes a batch of entries, in name order.
Sink = Callable[[list[Entry]], None]
_NO_CLASS = "not inside a class folder"


def by_split(tree: Tree) -> bool:
    """Whether the top folders that hold images are all split folders (train/, val/, ...)."""
    tops = {file.parts[0] for file in tree.files if file.is_image and "/" in file.name}
    return bool(tops) and all(split_name(top) for top in tops)


def place(file: File, splits: bool) -> Entry | Problem:
    """An image's entry (its class is its folder), or why it has none."""
    if not file.is_image:
        return unsupported(file)
    parts = file.parts
    split = split_name(parts[0]) if splits and len(parts) > 1 else None
    rest = parts[1:] if split is not None else parts
    if len(rest) < 2:
        return Problem(file.name, _NO_CLASS)
    return Entry(file.path, file.name, rest[0], split)


def read_folder(tree: Tree) -> Manifest:
    """The whole manifest of a walked tree (``stream_folder`` reads without holding it)."""
    entries: list[Entry] = []
    manifest = _read("folder", tree.files, by_split(tree), entries.extend)
    manifest.skipped = sorted_problems([*manifest.skipped, *tree.refused])
    manifest.entries = entries
    return manifest


def stream_folder(layout: Tree, sink: Sink) -> Manifest:
    """The manifest of the tree whose layout (``tree.survey``) is given, its entries handed to
    `sink` a batch at a time and not kept (``Manifest.entries`` is empty, ``count`` says how
    many): memory grows with the folders and the problems, not with the images."""
    return _read("folder", walk(layout.root), by_split(layout), sink)


def _read(fmt: str, items: Iterable[File | Problem], splits: bool, sink: Sink) -> Manifest:
    skipped: list[Problem] = []
    problems: list[Problem] = []
    classes: set[str] = set()
    batch: list[Entry] = []
    count = 0
    for item in items:
        found = item if isinstance(item, Problem) else place(item, splits)
        if isinstance(found, Entry):
            classes.add(found.label or "")
            batch.append(found)
            if len(batch) >= BATCH:
                count += len(batch)
                sink(batch)
                batch = []
        elif isinstance(item, Problem) or found.reason != _NO_CLASS:
            skipped.append(found)
        else:
            problems.append(found)
    count += len(batch)
    sink(batch)
    return Manifest(
        fmt, [], sorted(classes), sorted_problems(skipped), sorted_problems(problems), count
    )

"""Reads a dataset laid out as one folder of images per class, optionally inside train/, val/
and test/ folders.

Pure over the walked tree: imports ``manifest``, ``tree`` and ``labels`` beside it; opens no file.
"""

from __future__ import annotations

from services.datasets.formats.labels import Labels, several, to_manifest, unsupported
from services.datasets.formats.manifest import Manifest, Problem, split_name
from services.datasets.formats.tree import Tree


def read_folder(tree: Tree) -> Manifest:
    """Each image's class is its folder; a top level of split folders gives the split."""
    tops = {file.parts[0] for file in tree.files if file.is_image and "/" in file.name}
    by_split = bool(tops) and all(split_name(top) for top in tops)
    labels = Labels(none="not inside a class folder", several=several("classes"))
    skipped: list[Problem] = []
    for file in tree.files:
        if not file.is_image:
            skipped.append(unsupported(file))
            continue
        parts = file.parts
        split = split_name(parts[0]) if by_split and len(parts) > 1 else None
        rest = parts[1:] if split is not None else parts
        labels.add(file, split, rest[0] if len(rest) > 1 else None)
    return to_manifest("folder", tree, labels, skipped)

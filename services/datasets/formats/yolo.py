"""Reads YOLO labels: images/ and labels/ folders (or train/images and train/labels), one
``class cx cy w h`` line per box, and class names in data.yaml, classes.txt or obj.names.

An image's label file shares its path under labels/ with a .txt suffix; a label file with no
image is reported, not read. Reads only walked text files; imports the standard library, yaml,
and ``manifest``, ``tree`` and ``labels`` beside it.
"""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

from services.datasets.formats.labels import Labels, left_out, several, to_manifest
from services.datasets.formats.manifest import (
    Box,
    FormatError,
    Manifest,
    Problem,
    clamped,
    split_name,
)
from services.datasets.formats.tree import File, Tree, read_text

_NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")


def has_yolo_layout(tree: Tree) -> bool:
    """Whether the tree has images inside an images folder and a labels folder beside it."""
    images = any(f.is_image and _yolo_slot(f.parts, "images") for f in tree.files)
    return images and any(_yolo_slot(f.parts, "labels") for f in tree.files)


def names_file(tree: Tree) -> File | None:
    """The file that names the classes, in the order YOLO tools look for one."""
    return next((tree.by_name[n] for n in _NAME_FILES if n in tree.by_name), None)


def read_yolo(tree: Tree, *, detection: bool = False) -> Manifest:
    """For a detection project an image with no label file is a negative, and a bad line leaves
    its image out (reported, with the line) while the rest is read; otherwise it refuses all."""
    classes_file = names_file(tree)
    if classes_file is None:
        message = "the yolo format needs class names: add data.yaml, classes.txt or obj.names"
        raise FormatError(message)
    names = _yolo_names(classes_file)
    label_files = {
        _yolo_key(f.parts, slot[0]): f
        for f in tree.files
        if f.suffix == ".txt" and (slot := _yolo_slot(f.parts, "labels"))
    }
    labels = Labels(none="no labels", several=several("classes"), detection=detection)
    for file in tree.files:
        slot = _yolo_slot(file.parts, "images") if file.is_image else None
        if slot is not None:
            label_file = label_files.pop(_yolo_key(file.parts, slot[0]), None)
            labels.add(file, slot[1])
            for box in _yolo_boxes(label_file, names, labels, file, slot[1]) if label_file else []:
                labels.add(file, slot[1], box.label, box)
    skipped = _yolo_left_out(tree, labels, classes_file, label_files)
    return to_manifest("yolo", tree, labels, skipped)


def _yolo_slot(parts: tuple[str, ...], kind: str) -> tuple[int, str | None] | None:
    """Where the `kind` folder ("images" or "labels") sits in a YOLO path, and its split."""
    if len(parts) >= 2 and parts[0].lower() == kind:
        return 0, split_name(parts[1]) if len(parts) >= 3 else None
    if len(parts) >= 3 and parts[1].lower() == kind and split_name(parts[0]):
        return 1, split_name(parts[0])
    return None


def _yolo_key(parts: tuple[str, ...], at: int) -> tuple[str, ...]:
    # images/train/a.jpg and labels/train/a.txt share a key, as do train/images and train/labels.
    prefix = tuple(part.lower() for part in parts[:at])
    return (str(at), *prefix, *parts[at + 1 : -1], posixpath.splitext(parts[-1])[0])


def _yolo_left_out(
    tree: Tree, labels: Labels, classes_file: File, orphans: dict[tuple[str, ...], File]
) -> list[Problem]:
    unmatched = set(orphans.values())
    skipped: list[Problem] = []
    for file in tree.files:
        if file in unmatched:
            skipped.append(Problem(file.name, "label file with no matching image"))
        elif file not in labels and file != classes_file and not _yolo_slot(file.parts, "labels"):
            skipped.append(left_out(file, "not inside an images folder"))
    return skipped


def _yolo_names(file: File) -> dict[int, str]:
    if file.suffix in (".yaml", ".yml"):
        names = _names_from_yaml(file)
    else:
        lines = [line.strip() for line in read_text(file).splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if "" in lines:
            raise FormatError(f"{file.name} line {lines.index('') + 1} is empty: name a class")
        names = dict(enumerate(lines))
    if not names:
        raise FormatError(f"{file.name} names no classes")
    return names


def _names_from_yaml(file: File) -> dict[int, str]:
    try:
        data = yaml.safe_load(read_text(file))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise FormatError(f"{file.name} is not valid YAML{where}: {problem}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list):
        pairs = list(enumerate(names))
    elif isinstance(names, dict):
        pairs = list(names.items())
    else:
        raise FormatError(f"{file.name} has no 'names' list or mapping of class names")
    return {_class_id(file, key): _class_name(file, key, value) for key, value in pairs}


def _class_id(file: File, key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 0:
        raise FormatError(f"{file.name}: class id {key!r} is not a whole number")
    return key


def _class_name(file: File, key: Any, value: Any) -> str:
    # Only scalars: a YAML alias could otherwise expand into something enormous here.
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    if not scalar or not str(value).strip():
        raise FormatError(f"{file.name}: class {key!r} has no usable name (quote it in the YAML)")
    return str(value).strip()


def _yolo_boxes(
    file: File, names: dict[int, str], labels: Labels, image: File, split: str | None
) -> list[Box]:
    """The label file's boxes; for a detection project a bad line rejects the image instead
    of refusing the whole import."""
    boxes: list[Box] = []
    for number, line in enumerate(read_text(file).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            boxes.append(_yolo_box(f"{file.name} line {number}", tokens, names))
        except FormatError as err:
            if not labels.detection:
                raise
            labels.reject(image, split, err.message)
    return boxes


def _yolo_box(where: str, tokens: list[str], names: dict[int, str]) -> Box:
    if len(tokens) != 5:
        raise FormatError(f"{where}: expected 'class cx cy w h', found {len(tokens)} values")
    try:
        class_id = int(tokens[0])
    except ValueError:
        message = f"{where}: class id {tokens[0]!r} is not a whole number"
        raise FormatError(message, code="LABEL_OUT_OF_RANGE") from None
    if class_id not in names:
        message = f"{where}: class id {class_id} is not among the {len(names)} class names"
        raise FormatError(message, code="LABEL_OUT_OF_RANGE")
    cx, cy, w, h = (_fraction(where, token) for token in tokens[1:])
    if w <= 0 or h <= 0:
        message = f"{where}: box width and height must be above 0"
        raise FormatError(message, code="LABEL_OUT_OF_RANGE")
    return clamped(names[class_id], cx - w / 2, cy - h / 2, w, h)


def _fraction(where: str, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise FormatError(f"{where}: {token!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        message = f"{where}: {token} is outside 0-1; YOLO coordinates are fractions of the image"
        raise FormatError(message, code="LABEL_OUT_OF_RANGE")
    return value

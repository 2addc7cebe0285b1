"""Reads COCO annotations: one or more .json files (at the top or one folder down) with images,
annotations and categories; boxes are scaled to [0, 1] by each image's width and height.

The split comes from the file's name (instances_val2017.json) and file names are looked up only
among the walked files. Reads only walked JSON files; imports the standard library and
``manifest``, ``tree`` and ``labels`` beside it.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from services.datasets.formats.labels import Labels, left_out, missing, several, to_manifest
from services.datasets.formats.manifest import (
    Box,
    FormatError,
    Manifest,
    Problem,
    clamped,
    split_name,
)
from services.datasets.formats.tree import File, Tree, find

_COCO_KEYS = ("images", "annotations", "categories")
_NAME_FIELDS = {"categories": "name", "images": "file_name"}
_SPLIT_IN_NAME = re.compile(r"(?<![a-z])(train|val|test)")  # "instances_val2017", not "interval"

_Id = int | str


@dataclass(frozen=True)
class _CocoImage:
    file_name: str
    width: float | None
    height: float | None


def coco_docs(tree: Tree) -> list[tuple[File, dict[str, Any]]]:
    """The COCO documents in the tree, parsed once and kept on it for detection and reading."""
    if tree.coco is None:
        tree.coco = []
        for file in tree.files:
            if file.suffix == ".json" and len(file.parts) <= 2:
                doc = _coco_doc(file)
                if doc is not None:
                    tree.coco.append((file, doc))
    return tree.coco


def _coco_doc(file: File) -> dict[str, Any] | None:
    doc = _load_json(file)
    present = [key for key in _COCO_KEYS if isinstance(doc, dict) and key in doc]
    if len(present) == len(_COCO_KEYS):
        return doc
    if len(present) == 2:  # almost COCO: say what is wrong rather than guess another format
        absent = next(key for key in _COCO_KEYS if key not in present)
        raise FormatError(f"{file.name} looks like COCO annotations but has no '{absent}'")
    return None


def _load_json(file: File) -> Any:
    try:
        return json.loads(file.path.read_bytes())
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        message = f"{file.name} is not valid JSON: {exc.msg} at {where}"
        raise FormatError(message, code="INVALID_JSON") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, huge numbers, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise FormatError(f"{file.name} is not valid JSON: {reason}", code="INVALID_JSON") from None


def read_coco(tree: Tree, *, detection: bool = False) -> Manifest:
    """For a detection project a bad annotation leaves out its image (or, pointing at no
    image, is reported against its JSON file) and the rest is read; otherwise it refuses all."""
    docs = coco_docs(tree)
    if not docs:
        raise FormatError(
            "no COCO annotations found: the coco format needs a .json (at the top or one "
            "folder down) with images, annotations and categories"
        )
    labels = Labels(none="no annotation", several=several("categories"), detection=detection)
    absent: list[str] = []
    orphans: list[Problem] = []
    for sheet, doc in docs:
        absent += _read_coco_doc(tree, sheet, doc, labels, orphans)
    if absent and not detection:
        raise missing(absent, "the COCO annotations")
    for name in dict.fromkeys(absent):  # detection: an image listed but not there is reported
        orphans.append(Problem(name, "listed in the COCO annotations but not found"))
    sheets = {sheet for sheet, _ in docs}
    others = [file for file in tree.files if file not in sheets and file not in labels]
    skipped = [left_out(file, "not listed in the COCO annotations") for file in others]
    manifest = to_manifest("coco", tree, labels, skipped)
    manifest.label_problems = sorted([*manifest.label_problems, *orphans], key=_problem_order)
    return manifest


def _problem_order(problem: Problem) -> tuple[str, str]:
    return problem.file, problem.reason


def _read_coco_doc(
    tree: Tree, sheet: File, doc: dict[str, Any], labels: Labels, orphans: list[Problem]
) -> list[str]:
    """Adds one JSON file's images and annotations to labels; returns the file names not found.
    A detection project's bad annotations go to ``labels.reject`` or ``orphans``."""
    # The split is in the name, as in instances_val2017.json, or in the folder, as in valid/.
    match = _SPLIT_IN_NAME.search(sheet.name.lower())
    split = split_name(match.group(1)) if match else None
    categories = _coco_categories(sheet.name, _items(sheet.name, doc, "categories"))
    images = _coco_images(sheet.name, _items(sheet.name, doc, "images"))
    found: dict[_Id, File] = {}
    absent: list[str] = []
    for image_id, image in images.items():
        file = find(tree, _coco_folders(sheet.name, split), image.file_name)
        if file is None:
            absent.append(image.file_name)
        elif file.is_image:
            found[image_id] = file
            labels.add(file, split)
    for index, item in enumerate(_items(sheet.name, doc, "annotations")):
        where = f"{sheet.name}: annotations[{index}]"
        try:
            image_id, category = _coco_annotation(where, item, images, categories)
            if image_id in found:
                box = _coco_box(where, category, item.get("bbox"), images[image_id])
                labels.add(found[image_id], split, category, box)
        except FormatError as err:
            if not labels.detection:
                raise
            key = item.get("image_id")
            file = found.get(key) if isinstance(key, int | str) else None
            if file is None:
                orphans.append(Problem(sheet.name, err.message))
            else:
                labels.reject(file, split, err.message)
    return absent


def _items(name: str, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc[key]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise FormatError(f"{name}: '{key}' must be a list of objects")
    return items


def _coco_id(value: Any, where: str) -> _Id:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FormatError(f"{where} has no valid id")
    return value


def _coco_categories(name: str, items: list[dict[str, Any]]) -> dict[_Id, str]:
    return {category_id: label for category_id, label, _ in _named(name, "categories", items)}


def _coco_images(name: str, items: list[dict[str, Any]]) -> dict[_Id, _CocoImage]:
    images: dict[_Id, _CocoImage] = {}
    for image_id, file_name, item in _named(name, "images", items):
        width, height = _dimension(item.get("width")), _dimension(item.get("height"))
        images[image_id] = _CocoImage(file_name, width, height)
    return images


def _named(
    name: str, key: str, items: list[dict[str, Any]]
) -> Iterator[tuple[_Id, str, dict[str, Any]]]:
    """Each of `key`'s items with its id and its name (a category) or file_name (an image).

    Refuses an item without a valid id or name, and a repeated id, naming the item.
    """
    field = _NAME_FIELDS[key]
    seen: set[_Id] = set()
    for index, item in enumerate(items):
        where = f"{name}: {key}[{index}]"
        item_id = _coco_id(item.get("id"), where)
        text = item.get(field)
        if not isinstance(text, str) or not text.strip():
            raise FormatError(f"{where} has no {field}")
        if item_id in seen:
            raise FormatError(f"{where} repeats the id {item_id!r}")
        seen.add(item_id)
        yield item_id, text.strip(), item


def _dimension(value: Any) -> float | None:
    return float(value) if _is_number(value) and 0 < value < math.inf else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _coco_folders(name: str, split: str | None) -> list[str]:
    """Where an image's file_name may be relative to, in the order they are tried."""
    here = posixpath.dirname(name)
    # COCO's own layout: annotations/instances_val2017.json beside a val2017/ folder.
    subset = posixpath.splitext(posixpath.basename(name))[0].removeprefix("instances_")
    folders = [here, posixpath.join(here, "images"), "", "images"]
    if split is not None:
        folders += [split, posixpath.join("images", split)]
    folders += [subset, posixpath.join("images", subset)]
    return list(dict.fromkeys(folders))


def _coco_annotation(
    where: str, item: dict[str, Any], images: dict[_Id, _CocoImage], categories: dict[_Id, str]
) -> tuple[_Id, str]:
    image_id = item.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int | str) or image_id not in images:
        raise FormatError(f"{where} refers to image {image_id!r}, which is not in images")
    category_id = item.get("category_id")
    valid = not isinstance(category_id, bool) and isinstance(category_id, int | str)
    if not valid or category_id not in categories:
        message = f"{where} has category_id {category_id!r}, which is not among the categories"
        raise FormatError(message, code="UNKNOWN_CATEGORY")
    return image_id, categories[category_id]


def _coco_box(where: str, label: str, bbox: Any, image: _CocoImage) -> Box | None:
    if bbox is None or bbox == []:  # classification exports carry no box
        return None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise FormatError(f"{where}: bbox must be [x, y, width, height] in pixels")
    if image.width is None or image.height is None:
        message = f"{where}: {image.file_name} has no width and height in the JSON to scale its box"
        raise FormatError(message)
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise FormatError(f"{where}: bbox width and height must be above 0")
    box = clamped(label, x / image.width, y / image.height, w / image.width, h / image.height)
    if box.w <= 0 or box.h <= 0:
        raise FormatError(f"{where}: bbox lies outside its image")
    return box

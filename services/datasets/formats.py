"""Reads a dataset laid out as class folders, a CSV, COCO JSON or YOLO labels into a ``Manifest``:
the images to import with their label, split and boxes, and the files left out and why.

Filesystem only, and no image is opened here (decoding is the import job's work); imports nothing
from other ``services`` packages, only ``sources`` beside it. The tree is walked once, without
following links out of it, and label files can only name files that walk found, so no label file
can point the import outside its source. The four readers share that walk and the bookkeeping of
labels, which is why they live in one module (longer than the house's usual 150 lines).
"""

from __future__ import annotations

import csv
import json
import math
import os
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.datasets.sources import SourceError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
FORMATS = ("folder", "csv", "coco", "yolo")

_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_IGNORED = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_FILE_HEADERS = {"filename", "file", "path", "image", "image_path"}
_LABEL_HEADERS = {"label", "class", "category"}
_COCO_KEYS = ("images", "annotations", "categories")
_NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")
_SPLIT_IN_NAME = re.compile(r"(?<![a-z])(train|val|test)")  # "instances_val2017", not "interval"
_MAX_LISTED = 20
_MAX_TEXT_BYTES = 16 * 1024**2  # label and class-name files are small; refuse to slurp a huge one
_UNKNOWN = (
    "could not tell the dataset's format: folder needs one folder of images per class (optionally "
    "inside train/, val/ and test/); csv needs one .csv at the top with filename,label[,split] "
    "rows; coco needs a .json with images, annotations and categories; yolo needs images/ and "
    "labels/ folders and class names in data.yaml, classes.txt or obj.names"
)


@dataclass(frozen=True)
class Box:
    """A box normalised to [0, 1]: top-left x, y, width, height."""

    label: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Entry:
    path: Path  # absolute path of the image file (inside the source root)
    name: str  # its path relative to the source root, posix style: what reports show
    label: str | None
    split: str | None  # "train" | "val" | "test" | None
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class Problem:
    file: str  # relative posix name
    reason: str


@dataclass
class Manifest:
    format: str  # "folder" | "csv" | "coco" | "yolo"
    entries: list[Entry]  # what to import, sorted by name
    classes: list[str]  # sorted class names that have at least one entry
    skipped: list[Problem]  # files ignored: unsupported extension etc.
    label_problems: list[Problem]  # images not imported because their label can't be known


class FormatError(SourceError):
    """The dataset cannot be read as a whole; ``INVALID_DATASET`` unless a code says more."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "INVALID_DATASET",
        status: int = 422,
        field: str | None = None,
    ) -> None:
        super().__init__(code, message, status=status, field=field)


def detect(root: Path) -> str:
    """The format of the dataset under root, or a FormatError saying what each format needs."""
    return _detect(_scan(root))


def read_manifest(root: Path, fmt: str = "auto") -> Manifest:
    """What to import from root, read as `fmt` ("auto" detects the format first)."""
    if fmt != "auto" and fmt not in FORMATS:
        message = f"format must be auto or one of {', '.join(FORMATS)}"
        raise FormatError(message, code="VALIDATION_ERROR", field="format")
    tree = _scan(root)
    return _READERS[_detect(tree) if fmt == "auto" else fmt](tree)


# -- the walk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    name: str  # relative posix name
    path: Path

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("/"))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1].lower()

    @property
    def is_image(self) -> bool:
        return self.suffix in IMAGE_EXTENSIONS


@dataclass
class _Tree:
    root: Path
    files: list[_File]  # sorted by name
    refused: list[Problem]  # what the walk would not follow
    by_name: dict[str, _File] = field(init=False)
    coco: list[tuple[_File, dict[str, Any]]] | None = None  # parsed once, for detect and read

    def __post_init__(self) -> None:
        self.by_name = {file.name: file for file in self.files}


def _scan(root: Path) -> _Tree:
    base = _source_root(root.resolve())
    files, refused = _walk(base)
    if not any(file.is_image for file in files):
        supported = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise FormatError(f"no images found; supported types are {supported}", code="NO_IMAGES")
    return _Tree(base, files, refused)


def _source_root(root: Path) -> Path:
    # ZIPs often wrap everything in one folder: look through such wrappers.
    while len(children := _visible(root)) == 1 and _is_wrapper(children[0]):
        root = children[0]
    return root


def _is_wrapper(folder: Path) -> bool:
    if folder.is_symlink() or not folder.is_dir() or folder.name.lower() in _SPLIT_NAMES:
        return False
    # A folder of images alone is the one class of a dataset, not a wrapper around it.
    return not all(c.is_file() and c.suffix.lower() in IMAGE_EXTENSIONS for c in _visible(folder))


def _visible(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if not _is_ignored(child.name)]


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED


def _walk(base: Path) -> tuple[list[_File], list[Problem]]:
    files: list[_File] = []
    refused: list[Problem] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        folder = Path(dirpath)
        dirnames[:] = [name for name in dirnames if not _is_ignored(name)]
        # os.walk lists linked folders but does not enter them: say so.
        linked = [folder / name for name in dirnames if (folder / name).is_symlink()]
        refused += [Problem(_display(path, base), "linked folder, not followed") for path in linked]
        for path in (folder / name for name in filenames if not _is_ignored(name)):
            reason = _refusal(path, base)
            if reason is None:
                files.append(_File(path.relative_to(base).as_posix(), path))
            else:
                refused.append(Problem(_display(path, base), reason))
    files.sort(key=lambda file: file.name)
    return files, refused


def _refusal(path: Path, base: Path) -> str | None:
    """Why a walked file cannot be part of the dataset, if it cannot."""
    try:
        path.relative_to(base).as_posix().encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if not path.is_symlink():
        return None if path.is_file() else "not a regular file"
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a link loop
        return "broken link"
    if not real.is_relative_to(base):
        return "link pointing outside the dataset"
    return None if real.is_file() else "link to something that is not a file"


def _display(path: Path, base: Path) -> str:
    name = path.relative_to(base).as_posix()
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- shared bookkeeping -----------------------------------------------------------------------


@dataclass
class _Seen:
    file: _File
    labels: list[str] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


class _Labels:
    """What each image was said to be, so that a conflict becomes a label problem, not a guess."""

    def __init__(self, none: str, several: Callable[[list[str]], str]) -> None:
        self._none = none
        self._several = several
        self._seen: dict[str, _Seen] = {}

    def __contains__(self, file: _File) -> bool:
        return file.name in self._seen

    def add(
        self, file: _File, split: str | None, label: str | None = None, box: Box | None = None
    ) -> None:
        seen = self._seen.setdefault(file.name, _Seen(file))
        if split not in seen.splits:
            seen.splits.append(split)
        if label and label not in seen.labels:
            seen.labels.append(label)
        if box is not None:
            seen.boxes.append(box)

    def result(self) -> tuple[list[Entry], list[Problem]]:
        entries: list[Entry] = []
        problems: list[Problem] = []
        for seen in self._seen.values():
            reason = self._problem(seen)
            if reason is not None:
                problems.append(Problem(seen.file.name, reason))
            else:
                file, label, split = seen.file, seen.labels[0], seen.splits[0]
                entries.append(Entry(file.path, file.name, label, split, tuple(seen.boxes)))
        return entries, problems

    def _problem(self, seen: _Seen) -> str | None:
        if not seen.labels:
            return self._none
        if len(seen.labels) > 1:
            return self._several(seen.labels)
        if len(seen.splits) > 1:
            return f"listed in splits {_and([split or 'none' for split in seen.splits])}"
        return None


def _manifest(fmt: str, tree: _Tree, labels: _Labels, skipped: list[Problem]) -> Manifest:
    entries, problems = labels.result()
    entries.sort(key=lambda entry: entry.name)
    return Manifest(
        format=fmt,
        entries=entries,
        classes=sorted({entry.label for entry in entries if entry.label is not None}),
        skipped=_sorted([*skipped, *tree.refused]),
        label_problems=_sorted(problems),
    )


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda problem: (problem.file, problem.reason))


def _find(tree: _Tree, folders: Iterable[str], raw: str) -> _File | None:
    """The walked file `raw` names, looked up from each of `folders` (relative to the root).

    Only names the walk found can match, so '..' or an absolute path cannot reach outside.
    """
    name = raw.replace("\\", "/")
    for folder in folders:
        file = tree.by_name.get(posixpath.normpath(posixpath.join(folder, name)))
        if file is not None:
            return file
    return None


def _left_out(file: _File, why: str) -> Problem:
    return Problem(file.name, why) if file.is_image else _unsupported(file)


def _unsupported(file: _File) -> Problem:
    return Problem(file.name, f"unsupported file type {file.suffix or '(no extension)'}")


def _missing(names: list[str], where: str) -> FormatError:
    unique = list(dict.fromkeys(names))
    shown = ", ".join(unique[:_MAX_LISTED])
    more = f" and {len(unique) - _MAX_LISTED} more" if len(unique) > _MAX_LISTED else ""
    message = f"{len(unique)} file(s) named in {where} were not found: {shown}{more}"
    return FormatError(message, code="MISSING_FILES")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _split_name(value: str) -> str | None:
    return _SPLIT_NAMES.get(value.lower())


def _read_text(file: _File) -> str:
    if file.path.stat().st_size > _MAX_TEXT_BYTES:
        raise FormatError(f"{file.name} is too large for a label or class-name file")
    try:
        return file.path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FormatError(f"{file.name} is not UTF-8 text") from None


# -- detection --------------------------------------------------------------------------------


def _detect(tree: _Tree) -> str:
    yolo = _has_yolo_layout(tree)
    if yolo and _names_file(tree) is not None:
        return "yolo"
    if _coco_docs(tree):
        return "coco"
    if len(_root_csvs(tree)) == 1:
        return "csv"
    if yolo:  # without this, images/ and labels/ would be read as two classes
        raise FormatError(
            "this looks like a YOLO dataset (images/ and labels/ folders) but has no class "
            "names: add data.yaml, classes.txt or obj.names at the top"
        )
    if any(file.is_image and "/" in file.name for file in tree.files):
        return "folder"
    raise FormatError(_UNKNOWN, code="UNKNOWN_FORMAT")


# -- folder -----------------------------------------------------------------------------------


def _read_folder(tree: _Tree) -> Manifest:
    tops = {file.parts[0] for file in tree.files if file.is_image and "/" in file.name}
    by_split = bool(tops) and all(_split_name(top) for top in tops)
    labels = _Labels(none="not inside a class folder", several=_several("classes"))
    skipped: list[Problem] = []
    for file in tree.files:
        if not file.is_image:
            skipped.append(_unsupported(file))
            continue
        parts = file.parts
        split = _split_name(parts[0]) if by_split and len(parts) > 1 else None
        rest = parts[1:] if split is not None else parts
        labels.add(file, split, rest[0] if len(rest) > 1 else None)
    return _manifest("folder", tree, labels, skipped)


# -- csv --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    line: int
    filename: str
    label: str
    split: str | None


def _root_csvs(tree: _Tree) -> list[_File]:
    return [file for file in tree.files if "/" not in file.name and file.suffix == ".csv"]


def _read_csv(tree: _Tree) -> Manifest:
    sheets = _root_csvs(tree)
    if len(sheets) != 1:
        found = f": {', '.join(s.name for s in sheets)}" if sheets else ""
        message = f"the csv format needs exactly one .csv at the top; found {len(sheets)}{found}"
        raise FormatError(message)
    sheet = sheets[0]
    labels = _Labels(none="empty label", several=lambda ls: f"listed with labels {_and(ls)}")
    missing: list[str] = []
    for row in _csv_rows(sheet):
        file = _find(tree, ("", "images"), row.filename)
        if file is None:
            missing.append(row.filename)
        elif file.is_image:
            labels.add(file, row.split, row.label)
    if missing:
        raise _missing(missing, sheet.name)
    others = [file for file in tree.files if file != sheet and file not in labels]
    return _manifest("csv", tree, labels, [_left_out(f, "not listed in the CSV") for f in others])


def _csv_rows(sheet: _File) -> list[_Row]:
    rows: list[_Row] = []
    with sheet.path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            for raw in reader:
                cells = [cell.strip() for cell in raw]
                if any(cells) and not (not rows and _is_header(cells)):
                    rows.append(_csv_row(sheet.name, reader.line_num, cells))
        except UnicodeDecodeError:
            raise FormatError(f"{sheet.name} is not UTF-8 text") from None
        except csv.Error as exc:
            raise FormatError(f"{sheet.name} row {reader.line_num}: {exc}") from None
    return rows


def _is_header(cells: list[str]) -> bool:
    return (
        len(cells) > 1 and cells[0].lower() in _FILE_HEADERS and cells[1].lower() in _LABEL_HEADERS
    )


def _csv_row(name: str, line: int, cells: list[str]) -> _Row:
    while len(cells) > 3 and not cells[-1]:  # trailing commas
        cells.pop()
    if not 2 <= len(cells) <= 3:
        found = f"{len(cells)} column{'s' if len(cells) != 1 else ''}"
        raise FormatError(f"{name} row {line}: expected filename,label[,split], found {found}")
    if not cells[0]:
        raise FormatError(f"{name} row {line}: the file name is empty")
    value = cells[2] if len(cells) == 3 else ""
    split = _split_name(value)
    if value and split is None:
        raise FormatError(f"{name} row {line}: split {value!r} is not one of train, val, test")
    return _Row(line, cells[0], cells[1], split)


# -- coco -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CocoImage:
    file_name: str
    width: float | None
    height: float | None


_Id = int | str


def _coco_docs(tree: _Tree) -> list[tuple[_File, dict[str, Any]]]:
    if tree.coco is None:
        tree.coco = []
        for file in tree.files:
            if file.suffix == ".json" and len(file.parts) <= 2:
                doc = _coco_doc(file)
                if doc is not None:
                    tree.coco.append((file, doc))
    return tree.coco


def _coco_doc(file: _File) -> dict[str, Any] | None:
    doc = _load_json(file)
    present = [key for key in _COCO_KEYS if isinstance(doc, dict) and key in doc]
    if len(present) == len(_COCO_KEYS):
        return doc
    if len(present) == 2:  # almost COCO: say what is wrong rather than guess another format
        absent = next(key for key in _COCO_KEYS if key not in present)
        raise FormatError(f"{file.name} looks like COCO annotations but has no '{absent}'")
    return None


def _load_json(file: _File) -> Any:
    try:
        return json.loads(file.path.read_bytes())
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        message = f"{file.name} is not valid JSON: {exc.msg} at {where}"
        raise FormatError(message, code="INVALID_JSON") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, huge numbers, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise FormatError(f"{file.name} is not valid JSON: {reason}", code="INVALID_JSON") from None


def _read_coco(tree: _Tree) -> Manifest:
    docs = _coco_docs(tree)
    if not docs:
        raise FormatError(
            "no COCO annotations found: the coco format needs a .json (at the top or one "
            "folder down) with images, annotations and categories"
        )
    labels = _Labels(none="no annotation", several=_several("categories"))
    missing: list[str] = []
    for sheet, doc in docs:
        missing += _read_coco_doc(tree, sheet, doc, labels)
    if missing:
        raise _missing(missing, "the COCO annotations")
    sheets = {sheet for sheet, _ in docs}
    others = [file for file in tree.files if file not in sheets and file not in labels]
    skipped = [_left_out(file, "not listed in the COCO annotations") for file in others]
    return _manifest("coco", tree, labels, skipped)


def _read_coco_doc(tree: _Tree, sheet: _File, doc: dict[str, Any], labels: _Labels) -> list[str]:
    """Adds one JSON file's images and annotations to labels; returns the file names not found."""
    # The split is in the name, as in instances_val2017.json, or in the folder, as in valid/.
    match = _SPLIT_IN_NAME.search(sheet.name.lower())
    split = _split_name(match.group(1)) if match else None
    categories = _coco_categories(sheet.name, _items(sheet.name, doc, "categories"))
    images = _coco_images(sheet.name, _items(sheet.name, doc, "images"))
    found: dict[_Id, _File] = {}
    missing: list[str] = []
    for image_id, image in images.items():
        file = _find(tree, _coco_folders(sheet.name, split), image.file_name)
        if file is None:
            missing.append(image.file_name)
        elif file.is_image:
            found[image_id] = file
            labels.add(file, split)
    for index, item in enumerate(_items(sheet.name, doc, "annotations")):
        where = f"{sheet.name}: annotations[{index}]"
        image_id, category = _coco_annotation(where, item, images, categories)
        if image_id in found:
            box = _coco_box(where, category, item.get("bbox"), images[image_id])
            labels.add(found[image_id], split, category, box)
    return missing


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
    categories: dict[_Id, str] = {}
    for index, item in enumerate(items):
        where = f"{name}: categories[{index}]"
        category_id = _coco_id(item.get("id"), where)
        label = item.get("name")
        if not isinstance(label, str) or not label.strip():
            raise FormatError(f"{where} has no name")
        if category_id in categories:
            raise FormatError(f"{where} repeats the id {category_id!r}")
        categories[category_id] = label.strip()
    return categories


def _coco_images(name: str, items: list[dict[str, Any]]) -> dict[_Id, _CocoImage]:
    images: dict[_Id, _CocoImage] = {}
    for index, item in enumerate(items):
        where = f"{name}: images[{index}]"
        image_id = _coco_id(item.get("id"), where)
        file_name = item.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            raise FormatError(f"{where} has no file_name")
        if image_id in images:
            raise FormatError(f"{where} repeats the id {image_id!r}")
        width, height = _dimension(item.get("width")), _dimension(item.get("height"))
        images[image_id] = _CocoImage(file_name.strip(), width, height)
    return images


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
    box = _clamped(label, x / image.width, y / image.height, w / image.width, h / image.height)
    if box.w <= 0 or box.h <= 0:
        raise FormatError(f"{where}: bbox lies outside its image")
    return box


def _clamped(label: str, x: float, y: float, w: float, h: float) -> Box:
    (x, w), (y, h) = _span(x, w), _span(y, h)
    return Box(label, x, y, w, h)


def _span(start: float, size: float) -> tuple[float, float]:
    # Exports often overshoot the image edge by a rounding error: keep boxes inside [0, 1], but
    # leave numbers already inside untouched so they round-trip exactly.
    if start >= 0.0 and start + size <= 1.0:
        return start, size
    low, high = min(max(start, 0.0), 1.0), min(max(start + size, 0.0), 1.0)
    return low, high - low


def _several(kind: str) -> Callable[[list[str]], str]:
    return lambda labels: f"several {kind}: {', '.join(sorted(labels))}"


# -- yolo -------------------------------------------------------------------------------------


def _yolo_slot(parts: tuple[str, ...], kind: str) -> tuple[int, str | None] | None:
    """Where the `kind` folder ("images" or "labels") sits in a YOLO path, and its split."""
    if len(parts) >= 2 and parts[0].lower() == kind:
        return 0, _split_name(parts[1]) if len(parts) >= 3 else None
    if len(parts) >= 3 and parts[1].lower() == kind and _split_name(parts[0]):
        return 1, _split_name(parts[0])
    return None


def _yolo_key(parts: tuple[str, ...], at: int) -> tuple[str, ...]:
    # images/train/a.jpg and labels/train/a.txt share a key, as do train/images and train/labels.
    prefix = tuple(part.lower() for part in parts[:at])
    return (str(at), *prefix, *parts[at + 1 : -1], posixpath.splitext(parts[-1])[0])


def _has_yolo_layout(tree: _Tree) -> bool:
    images = any(f.is_image and _yolo_slot(f.parts, "images") for f in tree.files)
    return images and any(_yolo_slot(f.parts, "labels") for f in tree.files)


def _names_file(tree: _Tree) -> _File | None:
    return next((tree.by_name[n] for n in _NAME_FILES if n in tree.by_name), None)


def _read_yolo(tree: _Tree) -> Manifest:
    names_file = _names_file(tree)
    if names_file is None:
        message = "the yolo format needs class names: add data.yaml, classes.txt or obj.names"
        raise FormatError(message)
    names = _yolo_names(names_file)
    label_files = {
        _yolo_key(f.parts, slot[0]): f
        for f in tree.files
        if f.suffix == ".txt" and (slot := _yolo_slot(f.parts, "labels"))
    }
    labels = _Labels(none="no labels", several=_several("classes"))
    for file in tree.files:
        slot = _yolo_slot(file.parts, "images") if file.is_image else None
        if slot is not None:
            label_file = label_files.pop(_yolo_key(file.parts, slot[0]), None)
            labels.add(file, slot[1])
            for box in _yolo_boxes(label_file, names) if label_file else []:
                labels.add(file, slot[1], box.label, box)
    return _manifest("yolo", tree, labels, _yolo_left_out(tree, labels, names_file, label_files))


def _yolo_left_out(
    tree: _Tree, labels: _Labels, names_file: _File, orphans: dict[tuple[str, ...], _File]
) -> list[Problem]:
    unmatched = set(orphans.values())
    skipped: list[Problem] = []
    for file in tree.files:
        if file in unmatched:
            skipped.append(Problem(file.name, "label file with no matching image"))
        elif file not in labels and file != names_file and not _yolo_slot(file.parts, "labels"):
            skipped.append(_left_out(file, "not inside an images folder"))
    return skipped


def _yolo_names(file: _File) -> dict[int, str]:
    if file.suffix in (".yaml", ".yml"):
        names = _names_from_yaml(file)
    else:
        lines = [line.strip() for line in _read_text(file).splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if "" in lines:
            raise FormatError(f"{file.name} line {lines.index('') + 1} is empty: name a class")
        names = dict(enumerate(lines))
    if not names:
        raise FormatError(f"{file.name} names no classes")
    return names


def _names_from_yaml(file: _File) -> dict[int, str]:
    try:
        data = yaml.safe_load(_read_text(file))
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


def _class_id(file: _File, key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 0:
        raise FormatError(f"{file.name}: class id {key!r} is not a whole number")
    return key


def _class_name(file: _File, key: Any, value: Any) -> str:
    # Only scalars: a YAML alias could otherwise expand into something enormous here.
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    if not scalar or not str(value).strip():
        raise FormatError(f"{file.name}: class {key!r} has no usable name (quote it in the YAML)")
    return str(value).strip()


def _yolo_boxes(file: _File, names: dict[int, str]) -> list[Box]:
    boxes: list[Box] = []
    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        tokens = line.split()
        if tokens:
            boxes.append(_yolo_box(f"{file.name} line {number}", tokens, names))
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
    return _clamped(names[class_id], cx - w / 2, cy - h / 2, w, h)


def _fraction(where: str, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise FormatError(f"{where}: {token!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        message = f"{where}: {token} is outside 0-1; YOLO coordinates are fractions of the image"
        raise FormatError(message, code="LABEL_OUT_OF_RANGE")
    return value


_READERS: dict[str, Callable[[_Tree], Manifest]] = {
    "folder": _read_folder,
    "csv": _read_csv,
    "coco": _read_coco,
    "yolo": _read_yolo,
}

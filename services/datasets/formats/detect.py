"""Tells which format a dataset is in and dispatches it to that format's reader.

The formats are tried from the most specific layout to the most general, and a tree that fits
none is refused with what each format needs. Imports the readers beside it and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.datasets.formats.coco import coco_docs, read_coco
from services.datasets.formats.csvfile import read_csv, root_csvs
from services.datasets.formats.folder import read_folder
from services.datasets.formats.manifest import FORMATS, FormatError, Manifest
from services.datasets.formats.tree import Tree, scan
from services.datasets.formats.yolo import has_yolo_layout, names_file, read_yolo

_UNKNOWN = (
    "could not tell the dataset's format: folder needs one folder of images per class (optionally "
    "inside train/, val/ and test/); csv needs one .csv at the top with filename,label[,split] "
    "rows; coco needs a .json with images, annotations and categories; yolo needs images/ and "
    "labels/ folders and class names in data.yaml, classes.txt or obj.names"
)


def detect(root: Path) -> str:
    """The format of the dataset under root, or a FormatError saying what each format needs."""
    return _detect(scan(root))


def read_manifest(root: Path, fmt: str = "auto", task: str = "classification") -> Manifest:
    """What to import from root, read as `fmt` ("auto" detects the format first), for a
    project of `task`: a detection project reads only formats with boxes (COCO, YOLO)."""
    if fmt != "auto" and fmt not in FORMATS:
        message = f"format must be auto or one of {', '.join(FORMATS)}"
        raise FormatError(message, code="VALIDATION_ERROR", field="format")
    tree = scan(root)
    fmt = _detect(tree) if fmt == "auto" else fmt
    if task != "detection":
        return _READERS[fmt](tree)
    if fmt not in _BOXED:
        message = f"a detection project needs boxes: import COCO or YOLO, not {fmt}"
        raise FormatError(message, code="INVALID_DATASET", field="format")
    return _BOXED[fmt](tree, detection=True)


def _detect(tree: Tree) -> str:
    yolo = has_yolo_layout(tree)
    if yolo and names_file(tree) is not None:
        return "yolo"
    if coco_docs(tree):
        return "coco"
    if len(root_csvs(tree)) == 1:
        return "csv"
    if yolo:  # without this, images/ and labels/ would be read as two classes
        raise FormatError(
            "this looks like a YOLO dataset (images/ and labels/ folders) but has no class "
            "names: add data.yaml, classes.txt or obj.names at the top"
        )
    if any(file.is_image and "/" in file.name for file in tree.files):
        return "folder"
    raise FormatError(_UNKNOWN, code="UNKNOWN_FORMAT")


_READERS: dict[str, Callable[[Tree], Manifest]] = {
    "folder": read_folder,
    "csv": read_csv,
    "coco": read_coco,
    "yolo": read_yolo,
}
_BOXED: dict[str, Callable[..., Manifest]] = {"coco": read_coco, "yolo": read_yolo}

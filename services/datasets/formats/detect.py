"""Tells which format a dataset is in and dispatches it to that format's reader.

The formats are tried from the most specific layout to the most general, and a tree that fits
none is refused with what each format needs. The format is told from the tree's layout
(``tree.survey``: its folders and non-image files), so a folder dataset is read streaming,
never held whole; CSV, COCO and YOLO are read from the whole walk, as their label documents
are parsed whole by nature. Imports the readers beside it and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.datasets.formats.coco import coco_docs, read_coco
from services.datasets.formats.csvfile import read_csv, root_csvs
from services.datasets.formats.folder import BATCH, Sink, stream_folder
from services.datasets.formats.manifest import FORMATS, Entry, FormatError, Manifest
from services.datasets.formats.tree import Tree, scan, survey
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


def read_manifest(
    root: Path, fmt: str = "auto", task: str = "classification", sink: Sink | None = None
) -> Manifest:
    """What to import from root, read as `fmt` ("auto" detects the format first), for a
    project of `task`: a detection project reads only formats with boxes (COCO, YOLO).

    With a `sink`, the entries are handed to it in batches, in name order, and the manifest
    comes back without them (``count`` says how many): a folder dataset is then never held
    whole; the other formats are read whole and handed on."""
    if fmt != "auto" and fmt not in FORMATS:
        message = f"format must be auto or one of {', '.join(FORMATS)}"
        raise FormatError(message, code="VALIDATION_ERROR", field="format")
    layout = survey(root)
    fmt = _detect(layout) if fmt == "auto" else fmt
    if task == "detection" and fmt not in _BOXED:
        message = f"a detection project needs boxes: import COCO or YOLO, not {fmt}"
        raise FormatError(message, code="INVALID_DATASET", field="format")
    if fmt == "folder":
        if sink is not None:
            return stream_folder(layout, sink)
        entries: list[Entry] = []
        manifest = stream_folder(layout, entries.extend)
        manifest.entries = entries
        return manifest
    tree = scan(root)
    tree.coco = layout.coco  # each COCO document parsed once, if detection parsed it
    manifest = _BOXED[fmt](tree, detection=True) if task == "detection" else _READERS[fmt](tree)
    return manifest if sink is None else _hand_on(manifest, sink)


def _hand_on(manifest: Manifest, sink: Sink) -> Manifest:
    for start in range(0, len(manifest.entries), BATCH):
        sink(manifest.entries[start : start + BATCH])
    manifest.entries = []
    return manifest


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
    "csv": read_csv,
    "coco": read_coco,
    "yolo": read_yolo,
}
_BOXED: dict[str, Callable[..., Manifest]] = {"coco": read_coco, "yolo": read_yolo}

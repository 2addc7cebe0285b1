"""Reads a dataset described by one CSV at the top: ``filename,label[,split]`` rows, an optional
header, file names relative to the top or to images/.

Named ``csvfile`` so that it does not read as the standard library's ``csv``, which it uses.
Reads only the walked CSV; imports the standard library and ``manifest``, ``tree`` and
``labels`` beside it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from services.datasets.formats.labels import Labels, and_list, left_out, missing, to_manifest
from services.datasets.formats.manifest import FormatError, Manifest, split_name
from services.datasets.formats.tree import File, Tree, find

_FILE_HEADERS = {"filename", "file", "path", "image", "image_path"}
_LABEL_HEADERS = {"label", "class", "category"}


@dataclass(frozen=True)
class _Row:
    line: int
    filename: str
    label: str
    split: str | None


def root_csvs(tree: Tree) -> list[File]:
    """The .csv files at the top of the tree: the csv format needs exactly one."""
    return [file for file in tree.files if "/" not in file.name and file.suffix == ".csv"]


def read_csv(tree: Tree) -> Manifest:
    sheets = root_csvs(tree)
    if len(sheets) != 1:
        found = f": {', '.join(s.name for s in sheets)}" if sheets else ""
        message = f"the csv format needs exactly one .csv at the top; found {len(sheets)}{found}"
        raise FormatError(message)
    sheet = sheets[0]
    labels = Labels(none="empty label", several=lambda ls: f"listed with labels {and_list(ls)}")
    absent: list[str] = []
    for row in _csv_rows(sheet):
        file = find(tree, ("", "images"), row.filename)
        if file is None:
            absent.append(row.filename)
        elif file.is_image:
            labels.add(file, row.split, row.label)
    if absent:
        raise missing(absent, sheet.name)
    others = [file for file in tree.files if file != sheet and file not in labels]
    return to_manifest("csv", tree, labels, [left_out(f, "not listed in the CSV") for f in others])


def _csv_rows(sheet: File) -> list[_Row]:
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
    split = split_name(value)
    if value and split is None:
        raise FormatError(f"{name} row {line}: split {value!r} is not one of train, val, test")
    return _Row(line, cells[0], cells[1], split)

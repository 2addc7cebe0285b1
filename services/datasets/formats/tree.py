"""The one walk of a dataset's source tree that every format reads from.

The tree is walked once, without following links out of it; what the walk will not follow is
recorded as a refusal, and a label file can only name a file the walk found (``find``), so no
label file can point the import outside its source. Filesystem reads only, no image is opened;
imports the standard library and ``manifest`` beside it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.datasets.formats.manifest import FormatError, Problem, split_name

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

_IGNORED = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_MAX_TEXT_BYTES = 16 * 1024**2  # label and class-name files are small; refuse to slurp a huge one


@dataclass(frozen=True)
class File:
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
class Tree:
    root: Path
    files: list[File]  # sorted by name
    refused: list[Problem]  # what the walk would not follow
    by_name: dict[str, File] = field(init=False)
    coco: list[tuple[File, dict[str, Any]]] | None = None  # parsed once, for detect and read

    def __post_init__(self) -> None:
        self.by_name = {file.name: file for file in self.files}


def scan(root: Path) -> Tree:
    """The files under root (looking through wrapper folders); refuses a tree with no image."""
    base = _source_root(root.resolve())
    files, refused = _walk(base)
    if not any(file.is_image for file in files):
        supported = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise FormatError(f"no images found; supported types are {supported}", code="NO_IMAGES")
    return Tree(base, files, refused)


def find(tree: Tree, folders: Iterable[str], raw: str) -> File | None:
    """The walked file `raw` names, looked up from each of `folders` (relative to the root).

    Only names the walk found can match, so '..' or an absolute path cannot reach outside.
    """
    name = raw.replace("\\", "/")
    for folder in folders:
        file = tree.by_name.get(posixpath.normpath(posixpath.join(folder, name)))
        if file is not None:
            return file
    return None


def read_text(file: File) -> str:
    """A small UTF-8 label or class-name file's text; refuses a huge or undecodable one."""
    if file.path.stat().st_size > _MAX_TEXT_BYTES:
        raise FormatError(f"{file.name} is too large for a label or class-name file")
    try:
        return file.path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FormatError(f"{file.name} is not UTF-8 text") from None


def _source_root(root: Path) -> Path:
    # ZIPs often wrap everything in one folder: look through such wrappers.
    while len(children := _visible(root)) == 1 and _is_wrapper(children[0]):
        root = children[0]
    return root


def _is_wrapper(folder: Path) -> bool:
    if folder.is_symlink() or not folder.is_dir() or split_name(folder.name) is not None:
        return False
    # A folder of images alone is the one class of a dataset, not a wrapper around it.
    return not all(c.is_file() and c.suffix.lower() in IMAGE_EXTENSIONS for c in _visible(folder))


def _visible(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if not _is_ignored(child.name)]


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED


def _walk(base: Path) -> tuple[list[File], list[Problem]]:
    files: list[File] = []
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
                files.append(File(path.relative_to(base).as_posix(), path))
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

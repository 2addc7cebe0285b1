"""The one walk of a dataset's source tree that every format reads from.

The tree is walked once, without following links out of it; what the walk will not follow is
recorded as a refusal, and a label file can only name a file the walk found (``find``), so no
label file can point the import outside its source. Filesystem reads only, no image is opened;
imports the standard library and ``manifest`` and ``listing`` beside it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.datasets.formats.listing import listing
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
    return _tree(root, keep=lambda file, first: True)


def survey(root: Path) -> Tree:
    """What ``scan`` finds, less the images after the first of each folder: enough to tell the
    format (which looks at folders, never at an image's own name) and to read a folder
    dataset's layout, in memory that grows with the folders and the non-image files, not
    with the images. Refuses a tree with no image, as ``scan`` does."""
    return _tree(root, keep=lambda file, first: first or not file.is_image)


def walk(base: Path, folder: Path | None = None) -> Iterator[File | Problem]:
    """The files under base (a tree's root) in name order, and what the walk will not follow,
    one folder at a time: only the folders being listed are held, never the whole tree, and a
    large folder's names wait on disk (``listing.HELD``)."""
    folder = folder or base
    try:
        # A folder sorts as its name plus "/", so the walk's order is that of the files' full
        # names; a name is all the listing holds of an entry (``_child``), and a large folder's
        # names wait on disk (``listing``).
        children = listing(folder, _child, _is_ignored)
    except OSError:  # an unreadable folder is skipped, as os.walk skips it
        return
    prefix = folder.relative_to(base).as_posix() + "/" if folder != base else ""
    fast = _encodes(prefix)
    for child in children:
        kind = child[-1]
        if kind == "/" and (folder / child[:-1]).is_symlink():  # listed, not entered (os.walk)
            yield Problem(_display(folder / child[:-1], base), "linked folder, not followed")
        elif kind == "/":
            yield from walk(base, folder / child[:-1])
        elif kind == "\0":
            yield _file(folder / child[:-1], base)
        elif fast and child.isascii():  # a regular file: the common case, no system call
            yield File(prefix + child, folder / child)
        else:
            yield _file(folder / child, base)


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


def _tree(root: Path, keep: Callable[[File, bool], bool]) -> Tree:
    base = _source_root(root.resolve())
    files: list[File] = []
    refused: list[Problem] = []
    folders: set[str] = set()  # those whose first image was seen
    images = False
    for item in walk(base):
        if isinstance(item, Problem):
            refused.append(item)
            continue
        folder = posixpath.dirname(item.name)
        first = item.is_image and folder not in folders
        if first:
            folders.add(folder)
        images = images or item.is_image
        if keep(item, first):
            files.append(item)
    if not images:
        supported = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise FormatError(f"no images found; supported types are {supported}", code="NO_IMAGES")
    return Tree(base, files, refused)


def _encodes(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _child(entry: os.DirEntry[str]) -> str:
    """A listed entry as the walk keeps it: its name, plus "/" for a folder (or a link to
    one), or plus NUL for anything but a regular file (no file name holds either; NUL keeps
    the name's place in the order). From what the listing told: no system call, mostly."""
    try:
        if entry.is_dir():  # follows a link, as os.walk does to sort folders from files
            return entry.name + "/"
        return entry.name if entry.is_file(follow_symlinks=False) else entry.name + "\0"
    except OSError:
        return entry.name + "\0"


def _file(path: Path, base: Path) -> File | Problem:
    reason = _refusal(path, base)
    if reason is None:
        return File(path.relative_to(base).as_posix(), path)
    return Problem(_display(path, base), reason)


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

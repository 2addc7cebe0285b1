"""The vocabulary of a read dataset: ``Manifest`` and its ``Entry``, ``Box`` and ``Problem``
values, the ``FormatError`` that refuses a whole dataset, and the names of formats and splits.

Plain frozen values; imports the standard library and ``sources`` (whose ``SourceError`` every
refusal of an import shares) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.datasets.sources import SourceError

FORMATS = ("folder", "csv", "coco", "yolo")

_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


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
    #: How many entries there are: ``len(entries)``, or those handed to a sink when the
    #: manifest was streamed (``read_manifest(..., sink=...)``, ``entries`` then empty).
    count: int = 0


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


def split_name(value: str) -> str | None:
    """The split a folder or cell names ("valid" is "val"), or None if it names none."""
    return _SPLIT_NAMES.get(value.lower())


def clamped(label: str, x: float, y: float, w: float, h: float) -> Box:
    """A box kept inside the image: [0, 1] on both axes."""
    (x, w), (y, h) = _span(x, w), _span(y, h)
    return Box(label, x, y, w, h)


def _span(start: float, size: float) -> tuple[float, float]:
    # Exports often overshoot the image edge by a rounding error: keep boxes inside [0, 1], but
    # leave numbers already inside untouched so they round-trip exactly.
    if start >= 0.0 and start + size <= 1.0:
        return start, size
    low, high = min(max(start, 0.0), 1.0), min(max(start + size, 0.0), 1.0)
    return low, high - low

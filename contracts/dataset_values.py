"""The values the datasets context's events carry: an image and its boxes, an import's report
(bounded whatever the import's size), the problems and duplicates it found, a split's deviations.
Re-exported by ``contracts.datasets``, where the messages that carry them are. Imports msgspec.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec


class Box(msgspec.Struct, frozen=True):
    """A bounding box, normalised to [0, 1]: top-left x, y, width, height."""

    label: str
    x: float
    y: float
    w: float
    h: float


class ImageRecord(msgspec.Struct, frozen=True):
    """One image as imported. Its id is the sha256 of its bytes: a dataset holds a file once."""

    image_id: str
    filename: str
    label: str
    width: int
    height: int
    size: int
    format: str
    phash: str  # 64-bit dHash, 16 hex chars: kept for the record, not used to find duplicates
    split_hint: str | None = None
    boxes: list[Box] = []
    #: 255-bit DCT hash (64 hex chars) that near-duplicate detection compares; "-" when the image
    #: has too little detail for one, "" when it was imported before this field existed. Either
    #: way such an image is compared by its bytes only.
    near_hash: str = ""


class FileProblem(msgspec.Struct, frozen=True):
    file: str
    reason: str


class DuplicateRecord(msgspec.Struct, frozen=True):
    """A file byte-identical to an image the dataset keeps (from this import or an earlier one)."""

    file: str
    label: str | None
    image_id: str
    kept_label: str


class SplitDeviation(msgspec.Struct, frozen=True):
    """A class (``label``; ``""``: all images, for a random split) more than two images off its
    exact share (``expected`` = images x ratio) of a subset, and why."""

    label: str
    subset: str
    expected: float
    actual: int
    reason: str


#: The most files an import's report lists of each kind (duplicates, corrupt, skipped, label
#: problems): its first ones, in the order found; its ``<kind>_total`` counts them all.
REPORT_LISTED: Final = 1000
#: The most bytes (encoded) each of those lists takes, so that a report, and the event that
#: carries it, stays far below a NATS message's limit (8 MB) whatever the import's size.
REPORT_LIST_BYTES: Final = 1_000_000
_REPORT_LISTS: Final = ("duplicates", "corrupt", "skipped", "label_problems")


class ImportReport(msgspec.Struct, frozen=True):
    """What an import did. Each list holds the first ``REPORT_LISTED`` files of its kind (fewer
    if they take more than ``REPORT_LIST_BYTES``); ``<kind>_total`` counts every one. Made or
    decoded, a report is bounded so (a report from before the totals counts its lists)."""

    format: str
    files: int
    imported: int
    duplicates: list[DuplicateRecord] = []
    corrupt: list[FileProblem] = []
    skipped: list[FileProblem] = []
    label_problems: list[FileProblem] = []
    seconds: float = 0.0
    duplicates_total: int = 0
    corrupt_total: int = 0
    skipped_total: int = 0
    label_problems_total: int = 0

    def __post_init__(self) -> None:
        for kind in _REPORT_LISTS:
            listed = getattr(self, kind)
            total = f"{kind}_total"
            msgspec.structs.force_setattr(self, total, max(getattr(self, total), len(listed)))
            bounded = _first(listed)
            if len(bounded) < len(listed):
                msgspec.structs.force_setattr(self, kind, bounded)


def _first(items: list[Any]) -> list[Any]:
    """The first of ``items`` within ``REPORT_LISTED`` and ``REPORT_LIST_BYTES``."""
    kept = items[:REPORT_LISTED]
    if len(_encode(kept)) <= REPORT_LIST_BYTES:
        return kept
    size = 2  # the brackets
    for n, item in enumerate(kept):
        size += len(_encode(item)) + 1
        if size > REPORT_LIST_BYTES:
            return kept[:n]
    return kept


_encode = msgspec.json.Encoder().encode

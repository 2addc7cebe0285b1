"""A dataset's health report: duplicates, unreadable files, class balance, odd image sizes,
and for a detection project (or images with boxes) the box figures of ``boxhealth``.

Pure: takes facts about the kept images and the files skipped at import, returns a JSON-ready
dict with every list in a fixed order. Imports nothing from ``services`` but ``neardup`` (the
near-duplicate grouping that splits use too) and ``imaging``'s FLAT marker.

Near-duplicates are the groups a split keeps whole; a group whose images carry different labels
is a label conflict, counted with the exact duplicates' conflicts. Images without a comparable
near hash are counted under ``near_duplicates_unchecked``, not guessed at. In a detection
project ``classes`` counts the images showing each class (an image counts for each class its
boxes show) and images without boxes are ``negatives``, not unlabelled.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.datasets import neardup
from services.datasets.boxhealth import BoxedImage, box_report, box_warnings
from services.datasets.imaging import FLAT

IMBALANCE_WARNING = 3.0  # largest/smallest class ratio from which the report warns


@dataclass(frozen=True)
class ImageFacts:
    image_id: str
    filename: str
    label: str | None
    sha256: str
    phash: str
    width: int
    height: int
    near_hash: str = ""  # imaging.near_hash; "" for images imported before it existed
    boxes: Sequence[Any] = ()  # its normalised boxes (``contracts.datasets.Box``)


@dataclass(frozen=True)
class DuplicateSeen:
    """A file found at import to be byte-identical to an image already kept."""

    filename: str
    label: str | None
    image_id: str


@dataclass(frozen=True)
class CorruptSeen:
    filename: str
    reason: str


def report(
    images: Sequence[ImageFacts],
    duplicates: Sequence[DuplicateSeen],
    corrupt: Sequence[CorruptSeen],
    *,
    min_per_class: int = 3,
    near_distance: int = neardup.NEAR_DISTANCE,
    tiny: int = 32,
    huge: int = 8000,
    detection: bool = False,
    duplicate_files: int | None = None,
    corrupt_files: int | None = None,
) -> dict[str, Any]:
    """The report; ``duplicate_files`` and ``corrupt_files`` count every such file the imports
    found, of which ``duplicates`` and ``corrupt`` are those their reports list (the first of
    each import), so the counts and warnings are whole while the lists stay bounded."""
    ordered = sorted(images, key=lambda f: (f.filename, f.image_id))
    classes = _classes(images, detection)
    exact = _exact_duplicates(images, duplicates)
    near = _near_duplicates(images, near_distance)
    conflicts = [*exact, *near]
    result: dict[str, Any] = {
        "images": len(images),
        "unlabeled": sum(1 for f in images if f.label is None),
        "classes": classes,
        "exact_duplicates": exact,
        "exact_duplicate_files": max(duplicate_files or 0, len(duplicates)),
        "label_conflicts": sum(1 for entry in conflicts if entry["label_conflict"]),
        "near_duplicates": near,
        "near_duplicate_images": sum(len(g["group"]) for g in near),
        "near_duplicates_unchecked": {
            "imported_before_near_hashes": sum(
                1 for f in images if f.near_hash != FLAT and not neardup.comparable(f.near_hash)
            ),
            "too_little_detail": sum(1 for f in images if f.near_hash == FLAT),
        },
        "corrupt": [
            {"filename": c.filename, "reason": c.reason}
            for c in sorted(corrupt, key=lambda c: (c.filename, c.reason))
        ],
        "corrupt_files": max(corrupt_files or 0, len(corrupt)),
        "imbalance": _imbalance(classes),
        "tiny_images": [_size_entry(f) for f in ordered if min(f.width, f.height) < tiny],
        "huge_images": [_size_entry(f) for f in ordered if max(f.width, f.height) > huge],
        "small_classes": [
            {"label": label, "count": n} for label, n in classes.items() if n < min_per_class
        ],
        "size_stats": {
            "width": _stats([f.width for f in images]),
            "height": _stats([f.height for f in images]),
        },
    }
    result["warnings"] = _warnings(result, min_per_class=min_per_class, tiny=tiny, huge=huge)
    return _with_boxes(result, images, detection)


def _with_boxes(
    result: dict[str, Any], images: Sequence[ImageFacts], detection: bool
) -> dict[str, Any]:
    """The report with its box figures and their warnings, for a detection project or any
    images with boxes; a single class is no problem for a detector."""
    if detection:
        result["warnings"] = [w for w in result["warnings"] if not w.startswith("Only one class")]
    if detection or any(f.boxes for f in images):
        boxed = [BoxedImage(f.image_id, f.filename, f.width, f.height, f.boxes) for f in images]
        result["boxes"] = box_report(boxed)
        result["warnings"] += box_warnings(result["boxes"], IMBALANCE_WARNING)
    return result


def _classes(images: Sequence[ImageFacts], detection: bool) -> dict[str, int]:
    """Images per label; for detection, images showing each class (negatives left out)."""
    if not detection:
        counts = Counter(f.label for f in images if f.label is not None)
    else:
        counts = Counter(label for f in images for label in {box.label for box in f.boxes})
    return dict(sorted(counts.items()))


def _exact_duplicates(
    images: Sequence[ImageFacts], duplicates: Sequence[DuplicateSeen]
) -> list[dict[str, Any]]:
    by_id = {f.image_id: f for f in images}
    copies: dict[str, list[DuplicateSeen]] = defaultdict(list)
    for dup in duplicates:
        copies[dup.image_id].append(dup)
    entries = []
    for image_id, seen in copies.items():
        kept = by_id.get(image_id)  # None if the kept image was deleted since
        labels = {d.label for d in seen} | ({kept.label} if kept else set())
        entries.append(
            {
                "image_id": image_id,
                "kept": kept.filename if kept else None,
                "label": kept.label if kept else None,
                "copies": [
                    {"filename": d.filename, "label": d.label}
                    for d in sorted(seen, key=lambda d: (d.filename, d.label or ""))
                ],
                "label_conflict": len(labels) > 1,
            }
        )
    return sorted(entries, key=lambda e: (e["kept"] or "", e["image_id"]))


def _near_duplicates(images: Sequence[ImageFacts], distance: int) -> list[dict[str, Any]]:
    groups = neardup.groups([f.image_id for f in images], [f.near_hash for f in images], distance)
    by_id = {f.image_id: f for f in images}
    return [
        {
            "group": ids,
            "filenames": [by_id[i].filename for i in ids],
            "labels": [by_id[i].label for i in ids],
            "label_conflict": len({by_id[i].label for i in ids}) > 1,
        }
        for ids in groups
    ]


def _imbalance(classes: dict[str, int]) -> dict[str, Any]:
    if not classes:
        return {"ratio": None, "largest": None, "smallest": None, "class_weights": {}}
    # Ties go to the alphabetically first label: classes is sorted and max/min keep the first.
    largest = max(classes, key=lambda label: classes[label])
    smallest = min(classes, key=lambda label: classes[label])
    total = sum(classes.values())
    return {
        "ratio": round(classes[largest] / classes[smallest], 4) if len(classes) > 1 else None,
        "largest": largest,
        "smallest": smallest,
        "class_weights": {
            label: round(total / (len(classes) * n), 4) for label, n in classes.items()
        },
    }


def _size_entry(f: ImageFacts) -> dict[str, Any]:
    return {"image_id": f.image_id, "filename": f.filename, "width": f.width, "height": f.height}


def _stats(values: list[int]) -> dict[str, float | int | None]:
    if not values:
        return {"min": None, "max": None, "mean": None, "median": None}
    return {
        "min": min(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 2),
        "median": statistics.median(values),
    }


def _listed(listed: int, total: int) -> str:
    """The end of a warning: a full stop, or which of them the report lists."""
    return "." if listed >= total else f" (the first {listed} are listed)."


def _warnings(r: dict[str, Any], *, min_per_class: int, tiny: int, huge: int) -> list[str]:
    found: list[str] = []
    if r["images"] == 0:
        found.append("The dataset has no images.")
    if r["unlabeled"]:
        found.append(f"{r['unlabeled']} images have no label.")
    if copies := r["exact_duplicate_files"]:
        found.append(
            f"{copies} files were exact copies of images already imported and skipped"
            + _listed(sum(len(e["copies"]) for e in r["exact_duplicates"]), copies)
        )
    if r["label_conflicts"]:
        found.append(
            f"{r['label_conflicts']} duplicated or near-duplicate images were given conflicting "
            "labels."
        )
    if near := r["near_duplicates"]:
        mixed = sum(1 for g in near if g["label_conflict"])
        found.append(
            f"{len(near)} groups of near-duplicate images ({r['near_duplicate_images']} "
            f"images); {mixed} of them mix labels. Splits keep each group in one subset."
        )
    if old := r["near_duplicates_unchecked"]["imported_before_near_hashes"]:
        found.append(
            f"{old} images were imported before near-duplicate hashes existed: they are checked "
            "for exact copies only."
        )
    if bad := r["corrupt_files"]:
        found.append(
            f"{bad} files could not be read as images and were skipped"
            + _listed(len(r["corrupt"]), bad)
        )
    found.extend(_class_warnings(r, min_per_class))
    if r["tiny_images"]:
        found.append(f"{len(r['tiny_images'])} images are under {tiny} px on their short side.")
    if r["huge_images"]:
        found.append(f"{len(r['huge_images'])} images are over {huge} px on their long side.")
    return found


def _class_warnings(r: dict[str, Any], min_per_class: int) -> list[str]:
    found: list[str] = []
    if len(r["classes"]) == 1:
        found.append("Only one class: a classifier needs at least two.")
    imbalance = r["imbalance"]
    if imbalance["ratio"] is not None and imbalance["ratio"] >= IMBALANCE_WARNING:
        found.append(
            f"Classes are imbalanced: {imbalance['largest']!r} has {imbalance['ratio']:g} times "
            f"as many images as {imbalance['smallest']!r}."
        )
    if small := r["small_classes"]:
        names = ", ".join(repr(c["label"]) for c in small[:5]) + (", ..." if len(small) > 5 else "")
        found.append(
            f"{len(small)} classes have fewer than {min_per_class} images, too few for a "
            f"train/val/test split: {names}."
        )
    return found

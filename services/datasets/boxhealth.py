"""The box figures of a dataset's health report (``health.report`` adds them under ``"boxes"``
for a detection project, or any dataset whose images carry boxes): boxes per image, box sizes
as COCO defines them (small: area under 32², medium: under 96², large: the rest, in pixels of
the image), boxes touching or outside the image's edge, degenerate boxes (under a pixel wide
or high) and class imbalance counted in boxes.

Pure: takes each image's size and normalised boxes; imports only the standard library.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SMALL_AREA = 32 * 32
MEDIUM_AREA = 96 * 96
#: Within this fraction of the image of its edge, a box touches the edge (a cut-off object).
EDGE = 1e-3
#: Images listed by name under each finding; the counts cover them all.
LISTED = 50


class BoxLike(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def w(self) -> float: ...
    @property
    def h(self) -> float: ...


@dataclass(frozen=True)
class BoxedImage:
    image_id: str
    filename: str
    width: int
    height: int
    boxes: Sequence[BoxLike]


def box_report(images: Sequence[BoxedImage]) -> dict[str, Any]:
    """The box figures; every list in filename order, every mapping sorted by key."""
    ordered = sorted(images, key=lambda i: (i.filename, i.image_id))
    sizes: Counter[str] = Counter({"small": 0, "medium": 0, "large": 0})
    by_class: Counter[str] = Counter()
    findings: dict[str, list[dict[str, Any]]] = {"touching_edge": [], "outside": [],
                                                 "degenerate": []}  # fmt: skip
    counts = {name: 0 for name in findings}
    for image in ordered:
        for box in image.boxes:
            by_class[box.label] += 1
            sizes[size_of(box, image.width, image.height)] += 1
            for name in _findings(box, image.width, image.height):
                counts[name] += 1
                if len(findings[name]) < LISTED:
                    findings[name].append(_entry(image, box))
    per_image = [len(i.boxes) for i in images]
    return {
        "total": sum(per_image),
        "negatives": sum(1 for n in per_image if n == 0),
        "per_image": _stats(per_image),
        "sizes": dict(sizes),
        "by_class": dict(sorted(by_class.items())),
        "imbalance": _imbalance(dict(sorted(by_class.items()))),
        **{name: {"count": counts[name], "listed": findings[name]} for name in findings},
    }


def size_of(box: BoxLike, width: int, height: int) -> str:
    """COCO's size class of a box by its area in the image's pixels."""
    area = box.w * width * box.h * height
    return "small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"


def _findings(box: BoxLike, width: int, height: int) -> list[str]:
    found = []
    if box.x < 0 or box.y < 0 or box.x + box.w > 1 + EDGE or box.y + box.h > 1 + EDGE:
        found.append("outside")
    elif box.x <= EDGE or box.y <= EDGE or box.x + box.w >= 1 - EDGE or box.y + box.h >= 1 - EDGE:
        found.append("touching_edge")
    if box.w * width < 1 or box.h * height < 1:
        found.append("degenerate")
    return found


def _entry(image: BoxedImage, box: BoxLike) -> dict[str, Any]:
    return {
        "image_id": image.image_id,
        "filename": image.filename,
        "box": {"label": box.label, "x": box.x, "y": box.y, "w": box.w, "h": box.h},
    }


def _imbalance(by_class: dict[str, int]) -> dict[str, Any]:
    if len(by_class) < 2:
        return {"ratio": None, "largest": None, "smallest": None}
    largest = max(by_class, key=lambda label: by_class[label])
    smallest = min(by_class, key=lambda label: by_class[label])
    ratio = round(by_class[largest] / by_class[smallest], 4)
    return {"ratio": ratio, "largest": largest, "smallest": smallest}


def _stats(values: list[int]) -> dict[str, float | int | None]:
    if not values:
        return {"min": None, "max": None, "mean": None, "median": None}
    return {
        "min": min(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 2),
        "median": statistics.median(values),
    }


def box_warnings(boxes: dict[str, Any], imbalance_warning: float) -> list[str]:
    found: list[str] = []
    if boxes["total"] == 0:
        found.append("No image has a box: a detector needs boxes to learn from.")
    if n := boxes["degenerate"]["count"]:
        found.append(f"{n} boxes are under a pixel wide or high: check those annotations.")
    if n := boxes["outside"]["count"]:
        found.append(f"{n} boxes reach outside their image.")
    if n := boxes["touching_edge"]["count"]:
        found.append(f"{n} boxes touch the image's edge (objects cut off by the frame).")
    ratio = boxes["imbalance"]["ratio"]
    if ratio is not None and ratio >= imbalance_warning:
        found.append(
            f"Classes are imbalanced by boxes: {boxes['imbalance']['largest']!r} has {ratio:g} "
            f"times as many boxes as {boxes['imbalance']['smallest']!r}."
        )
    return found

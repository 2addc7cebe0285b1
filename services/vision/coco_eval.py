"""COCO's detection metrics for a set of images, computed by pycocotools' own ``COCOeval``.

``evaluate_boxes`` takes the truth and the predicted boxes of each image (pixels, top-left
``x, y, w, h``; class index 0..K-1) and gives mAP@[.5:.95], mAP@.5, mAP@.75, mAP by object
size (COCO's small < 32², medium < 96², large) and per class its AP, AP@.5, recall@.5 and
number of truths. The numbers are COCOeval's, not a re-implementation: the studio only
translates its boxes into COCO's dictionaries and reads COCOeval's arrays back. ``image_errors``
matches one image's boxes at a score threshold, to find the images a detector gets most wrong.

Conventions where COCO says "undefined" (-1): mAP figures are 0.0 when the images hold no truth
at all; a size bucket with no truth of that size is ``None``; a class with no truth has ``ap``,
``ap50`` and ``recall`` ``None``. Imports numpy and pycocotools only.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

#: One box: (class index 0..K-1, x, y, w, h in pixels, score; 1.0 for truths).
BoxTuple = tuple[int, float, float, float, float, float]


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image, truths or predictions, in the pixels of a ``width`` x ``height``
    image."""

    image_id: str
    width: int
    height: int
    boxes: list[BoxTuple] = field(default_factory=list)


@dataclass(frozen=True)
class ClassAP:
    """One class's figures: AP@[.5:.95], AP@.5, recall@.5 (at most 100 detections per image) and
    how many truths it has; ``None`` where the class has no truth."""

    label: str
    ap: float | None
    ap50: float | None
    recall: float | None
    truths: int


@dataclass(frozen=True)
class DetectionMetrics:
    """COCO's summary figures (``map`` is mAP@[.5:.95]) and the per-class table."""

    map: float
    map50: float
    map75: float
    map_small: float | None
    map_medium: float | None
    map_large: float | None
    per_class: list[ClassAP] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict of every figure (per class as a list of dicts)."""
        return {
            "map": self.map,
            "map50": self.map50,
            "map75": self.map75,
            "map_small": self.map_small,
            "map_medium": self.map_medium,
            "map_large": self.map_large,
            "per_class": [vars(c).copy() for c in self.per_class],
        }


@dataclass(frozen=True)
class ImageErrors:
    """One image matched at a score threshold: indices into its truths that no prediction found
    (``misses``) and into its predictions that matched no truth (``false_positives``)."""

    misses: list[int]
    false_positives: list[int]


def evaluate_boxes(
    truths: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes], classes: Sequence[str]
) -> DetectionMetrics:
    """COCOeval's bbox figures for ``predictions`` against ``truths`` (one entry per image;
    images with no prediction may be left out of ``predictions``)."""
    ids = _image_ids(truths)
    unknown = [p.image_id for p in predictions if p.image_id not in ids]
    if unknown:
        raise ValueError(f"predictions for images with no truth entry: {unknown[:5]}")
    _check_classes(truths, len(classes))
    _check_classes(predictions, len(classes))
    images = [{"id": ids[t.image_id], "width": t.width, "height": t.height} for t in truths]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    gt = _coco(images, categories, _annotations(truths, ids, with_score=False))
    dt = _coco(images, categories, _annotations(predictions, ids, with_score=True))
    evaluator = COCOeval(gt, dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress and its table
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return _metrics(evaluator, truths, classes)


def image_errors(
    truth: ImageBoxes,
    prediction: ImageBoxes,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> ImageErrors:
    """Match ``prediction``'s boxes scoring at least ``score_threshold`` to ``truth``'s boxes of
    the same class, highest score first, each to the unmatched truth it overlaps most (IoU at
    least ``iou_threshold``), as COCO matches; what stays unmatched is an error."""
    matched: set[int] = set()
    false_positives: list[int] = []
    ranked = sorted(range(len(prediction.boxes)), key=lambda i: -prediction.boxes[i][5])
    for i in ranked:
        box = prediction.boxes[i]
        if box[5] < score_threshold:
            continue
        best, best_iou = -1, iou_threshold
        for j, gt in enumerate(truth.boxes):
            if j in matched or gt[0] != box[0]:
                continue
            overlap = iou(box[1:5], gt[1:5])
            if overlap >= best_iou:
                best, best_iou = j, overlap
        if best < 0:
            false_positives.append(i)
        else:
            matched.add(best)
    misses = [j for j in range(len(truth.boxes)) if j not in matched]
    return ImageErrors(misses=misses, false_positives=sorted(false_positives))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x, y, w, h`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _image_ids(truths: Sequence[ImageBoxes]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for t in truths:
        if t.image_id in ids:
            raise ValueError(f"image {t.image_id!r} appears twice in the truths")
        ids[t.image_id] = len(ids) + 1
    return ids


def _check_classes(images: Sequence[ImageBoxes], num_classes: int) -> None:
    for image in images:
        for box in image.boxes:
            if not 0 <= box[0] < num_classes:
                raise ValueError(
                    f"image {image.image_id!r}: class index {box[0]} outside 0..{num_classes - 1}"
                )


def _annotations(
    images: Sequence[ImageBoxes], ids: dict[str, int], *, with_score: bool
) -> list[dict[str, Any]]:
    anns: list[dict[str, Any]] = []
    for image in images:
        for k, x, y, w, h, score in image.boxes:
            ann: dict[str, Any] = {
                "id": len(anns) + 1,
                "image_id": ids[image.image_id],
                "category_id": k + 1,
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(w) * float(h),
                "iscrowd": 0,
            }
            if with_score:
                ann["score"] = float(score)
            anns.append(ann)
    return anns


def _coco(images: list[dict[str, Any]], categories: list[dict[str, Any]], anns: list[Any]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _metrics(
    evaluator: COCOeval, truths: Sequence[ImageBoxes], classes: Sequence[str]
) -> DetectionMetrics:
    stats = evaluator.stats  # COCO's 12 summary figures; -1 where undefined
    counts = np.zeros(len(classes), dtype=np.int64)
    for t in truths:
        for box in t.boxes:
            counts[box[0]] += 1
    # precision: [IoU thresholds, recall points, classes, area ranges, max dets];
    # recall: [IoU thresholds, classes, area ranges, max dets]. Area 0 is "all", max dets -1 is 100.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    recall = evaluator.eval["recall"][:, :, 0, -1]
    per_class = [
        ClassAP(
            label=name,
            ap=_mean(precision[:, :, k]) if counts[k] else None,
            ap50=_mean(precision[0, :, k]) if counts[k] else None,
            recall=_mean(recall[0, k]) if counts[k] else None,
            truths=int(counts[k]),
        )
        for k, name in enumerate(classes)
    ]
    return DetectionMetrics(
        map=max(float(stats[0]), 0.0),
        map50=max(float(stats[1]), 0.0),
        map75=max(float(stats[2]), 0.0),
        map_small=_defined(stats[3]),
        map_medium=_defined(stats[4]),
        map_large=_defined(stats[5]),
        per_class=per_class,
    )


def _mean(values: Any) -> float:
    """The mean of COCO's defined entries (-1 marks undefined ones); 0.0 if none is defined."""
    array = np.asarray(values, dtype=np.float64)
    defined = array[array > -1]
    return float(defined.mean()) if defined.size else 0.0


def _defined(value: Any) -> float | None:
    return None if float(value) < 0 else float(value)

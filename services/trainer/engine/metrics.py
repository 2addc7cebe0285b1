"""Classification metrics from a model's predictions: accuracy, per-class scores, the confusion
matrix, calibration (the ECE and the reliability diagram's bins) and the worst mistakes, as one
JSON-ready report.

Pure Python over plain floats, no torch: the report can be rebuilt or tested without a model.
Imports the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TOP_K = 5


@dataclass(frozen=True)
class Prediction:
    """One image's true class index and the model's softmax over every class."""

    image_id: str
    true: int
    probabilities: tuple[float, ...]

    @property
    def predicted(self) -> int:
        """The most probable class; a tie goes to the lowest class index."""
        return max(range(len(self.probabilities)), key=lambda i: (self.probabilities[i], -i))

    @property
    def confidence(self) -> float:
        return self.probabilities[self.predicted]


def report(
    predictions: Sequence[Prediction], classes: list[str], *, bins: int = 15,
    misclassified_limit: int = 500,
) -> dict[str, Any]:  # fmt: skip
    """The metrics of ``predictions`` over ``classes``; a score that is undefined (no support,
    nothing predicted, no images) is 0, never NaN, so the report always encodes as JSON."""
    _check(predictions, len(classes), bins)
    matrix = confusion_matrix(predictions, len(classes))
    per_class = _per_class(matrix, classes)
    n = len(predictions)
    correct = sum(matrix[i][i] for i in range(len(classes)))
    return {
        "images": n,
        "accuracy": _ratio(correct, n),
        "top5_accuracy": top_k_accuracy(predictions, TOP_K) if len(classes) >= TOP_K else None,
        "per_class": per_class,
        "macro": _average(per_class, [1] * len(classes)),
        "weighted": _average(per_class, [row["support"] for row in per_class]),
        "confusion_matrix": {"labels": list(classes), "matrix": matrix},
        "ece": expected_calibration_error(predictions, bins),
        "misclassified": _misclassified(predictions, classes, misclassified_limit),
        # Last, so reports stored before it read the same: the reliability diagram's bins.
        "calibration": calibration_bins(predictions, bins),
    }


def confusion_matrix(predictions: Sequence[Prediction], size: int) -> list[list[int]]:
    """Counts with rows the true class and columns the predicted one."""
    matrix = [[0] * size for _ in range(size)]
    for p in predictions:
        matrix[p.true][p.predicted] += 1
    return matrix


def top_k_accuracy(predictions: Sequence[Prediction], k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable (ties: lower index)."""
    hits = 0
    for p in predictions:
        ranked = sorted(range(len(p.probabilities)), key=lambda i: (-p.probabilities[i], i))
        hits += p.true in ranked[:k]
    return _ratio(hits, len(predictions))


def expected_calibration_error(predictions: Sequence[Prediction], bins: int) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| * bin share.

    Bin ``b`` holds confidences in (b/bins, (b+1)/bins]; a confidence of 0 joins the first.
    """
    n = len(predictions)
    table = calibration_bins(predictions, bins)
    return sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / n if n else 0.0


def calibration_bins(predictions: Sequence[Prediction], bins: int) -> list[dict[str, Any]]:
    """The reliability diagram: per equal-width confidence bin (as in the ECE), its bounds, its
    number of images, their accuracy and their mean confidence (0 for an empty bin)."""
    counts, hits, confidence = [0] * bins, [0] * bins, [0.0] * bins
    for p in predictions:
        b = min(bins - 1, max(0, math.ceil(p.confidence * bins) - 1))
        counts[b] += 1
        hits[b] += p.predicted == p.true
        confidence[b] += p.confidence
    return [
        {
            "lower": b / bins,
            "upper": (b + 1) / bins,
            "count": counts[b],
            "accuracy": _ratio(hits[b], counts[b]),
            "confidence": _ratio(confidence[b], counts[b]),
        }
        for b in range(bins)
    ]


def _per_class(matrix: list[list[int]], classes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, label in enumerate(classes):
        tp = matrix[i][i]
        precision = _ratio(tp, sum(row[i] for row in matrix))
        recall = _ratio(tp, sum(matrix[i]))
        rows.append(
            {
                "label": label,
                "precision": precision,
                "recall": recall,
                "f1": _f1(precision, recall),
                "support": sum(matrix[i]),
            }
        )
    return rows


def _average(per_class: list[dict[str, Any]], weights: Sequence[int]) -> dict[str, float]:
    total = sum(weights)
    return {
        key: _ratio(sum(row[key] * w for row, w in zip(per_class, weights, strict=True)), total)
        for key in ("precision", "recall", "f1")
    }


def _misclassified(
    predictions: Sequence[Prediction], classes: list[str], limit: int
) -> list[dict[str, Any]]:
    wrong = [p for p in predictions if p.predicted != p.true]
    # Most confident first: those are the likeliest label errors in the data set.
    wrong.sort(key=lambda p: (-p.confidence, p.image_id))
    return [
        {
            "image_id": p.image_id,
            "true": classes[p.true],
            "predicted": classes[p.predicted],
            "confidence": p.confidence,
        }
        for p in wrong[:limit]
    ]


def _check(predictions: Sequence[Prediction], size: int, bins: int) -> None:
    if size < 1 or bins < 1:
        raise ValueError(f"need at least one class and one bin, not {size} and {bins}")
    for p in predictions:
        if len(p.probabilities) != size or not 0 <= p.true < size:
            raise ValueError(
                f"prediction {p.image_id!r} has {len(p.probabilities)} probabilities and true "
                f"class {p.true}, for {size} classes"
            )


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0

"""The reliability diagram's bins in the evaluation report: the same bins the ECE is made of,
worked out by hand, so the page's diagram and the ECE it shows can never disagree."""

from __future__ import annotations

import json

import pytest

from services.trainer.engine.metrics import Prediction, calibration_bins, report

ABC = ["a", "b", "c"]
# Confidences 0.5 (wrong), 0.8 (right), 0.6 (right), 0.6 (wrong), 0.7 (wrong), 0.9, 1.0 (right).
CASE = [
    Prediction("c2", 2, (0.2, 0.5, 0.3)),
    Prediction("a1", 0, (0.8, 0.1, 0.1)),
    Prediction("a2", 0, (0.6, 0.3, 0.1)),
    Prediction("b2", 1, (0.1, 0.3, 0.6)),
    Prediction("a3", 0, (0.2, 0.7, 0.1)),
    Prediction("b1", 1, (0.1, 0.9, 0.0)),
    Prediction("c1", 2, (0.0, 0.0, 1.0)),
]


def bin_(lower: float, upper: float, count: int, accuracy: float, confidence: float) -> dict:
    return {
        "lower": pytest.approx(lower),
        "upper": pytest.approx(upper),
        "count": count,
        "accuracy": pytest.approx(accuracy),
        "confidence": pytest.approx(confidence),
    }


def test_each_bin_holds_its_count_accuracy_and_mean_confidence() -> None:
    # Given seven predictions, when binned in two halves of the confidence range
    bins = calibration_bins(CASE, 2)

    # Then (0, .5] holds c2 alone (wrong), (.5, 1] the six others (4 right, mean 4.6 / 6)
    assert bins == [bin_(0, 0.5, 1, 0, 0.5), bin_(0.5, 1, 6, 4 / 6, 4.6 / 6)]


def test_the_report_carries_the_bins_its_ece_is_made_of() -> None:
    r = report(CASE, ABC, bins=4)

    bins = r["calibration"]
    assert [b["count"] for b in bins] == [0, 1, 3, 3]  # (.25, .5], (.5, .75], (.75, 1]
    assert bins[0] == bin_(0, 0.25, 0, 0, 0)  # an empty bin is zeros, never NaN
    gap = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / len(CASE)
    assert r["ece"] == pytest.approx(gap)
    json.dumps(r, allow_nan=False)


def test_no_predictions_give_empty_bins() -> None:
    bins = report([], ABC, bins=3)["calibration"]

    assert [b["count"] for b in bins] == [0, 0, 0]
    assert bins[-1]["upper"] == pytest.approx(1)

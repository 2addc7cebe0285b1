"""Evaluation: the metrics report against values worked out by hand, then ``evaluate`` on a
tiny smallcnn trained here, against the accuracy its own validation recorded."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from contracts.training import Hyperparameters
from services.trainer.engine import Checkpoint, EpochMetrics, Sample, read_checkpoint, train
from services.trainer.engine.evaluate import EvaluationStopped, evaluate
from services.trainer.engine.metrics import Prediction, report

ABC = ["a", "b", "c"]
# (id, true, probabilities). Confusion matrix, rows true: a [2 1 0], b [0 1 1], c [0 1 1].
# Listed out of confidence order so that the sort of the mistakes is tested.
CASE = [
    ("c2", 2, (0.2, 0.5, 0.3)),  # c -> b at 0.5, the edge of the lower ECE bin
    ("a1", 0, (0.8, 0.1, 0.1)),
    ("a2", 0, (0.6, 0.3, 0.1)),
    ("b2", 1, (0.1, 0.3, 0.6)),  # b -> c at 0.6
    ("a3", 0, (0.2, 0.7, 0.1)),  # a -> b at 0.7
    ("b1", 1, (0.1, 0.9, 0.0)),
    ("c1", 2, (0.0, 0.0, 1.0)),
]


def predictions(rows: Sequence[tuple[str, int, tuple[float, ...]]]) -> list[Prediction]:
    return [Prediction(image_id, true, probs) for image_id, true, probs in rows]


def scores(precision: float, recall: float, f1: float) -> dict[str, Any]:
    return {"precision": pytest.approx(precision), "recall": pytest.approx(recall),
            "f1": pytest.approx(f1)}  # fmt: skip


def test_the_report_matches_the_hand_computed_three_class_case() -> None:
    r = report(predictions(CASE), ABC, bins=2)

    assert r["images"] == 7
    assert r["accuracy"] == pytest.approx(4 / 7)
    assert r["top5_accuracy"] is None  # fewer than five classes
    assert r["confusion_matrix"] == {"labels": ABC, "matrix": [[2, 1, 0], [0, 1, 1], [0, 1, 1]]}
    assert r["per_class"] == [
        {"label": "a", "support": 3, **scores(1, 2 / 3, 0.8)},
        {"label": "b", "support": 2, **scores(1 / 3, 1 / 2, 0.4)},
        {"label": "c", "support": 2, **scores(1 / 2, 1 / 2, 0.5)},
    ]
    assert r["macro"] == scores(11 / 18, 5 / 9, 1.7 / 3)
    assert r["weighted"] == scores(2 / 3, 4 / 7, 0.6)
    # Bin (0, 0.5]: c2 alone, wrong at 0.5. Bin (0.5, 1]: 4 of 6 right at a mean of 4.6 / 6.
    assert r["ece"] == pytest.approx((0.5 + abs(4 - 4.6)) / 7)
    assert [(m["image_id"], m["true"], m["predicted"]) for m in r["misclassified"]] == [
        ("a3", "a", "b"), ("b2", "b", "c"), ("c2", "c", "b"),
    ]  # fmt: skip
    assert [m["confidence"] for m in r["misclassified"]] == pytest.approx([0.7, 0.6, 0.5])


def test_the_mistakes_are_cut_at_the_limit_most_confident_first() -> None:
    r = report(predictions(CASE), ABC, misclassified_limit=1)

    assert [m["image_id"] for m in r["misclassified"]] == ["a3"]


def test_top5_counts_the_true_class_among_the_five_most_probable() -> None:
    ranked = (0.3, 0.25, 0.2, 0.1, 0.09, 0.06)  # class 0 most probable, class 5 least
    rows = [("first", 0, ranked), ("fifth", 4, ranked), ("sixth", 5, ranked)]

    r = report(predictions(rows), list("uvwxyz"))

    assert r["top5_accuracy"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(1 / 3)


def test_a_tie_goes_to_the_lowest_class_index() -> None:
    r = report(predictions([("tie", 1, (0.4, 0.4, 0.2))]), ABC)

    assert r["confusion_matrix"]["matrix"][1] == [1, 0, 0]
    assert r["misclassified"][0]["predicted"] == "a"


def test_classes_never_predicted_or_never_seen_score_zero_not_nan() -> None:
    # b is seen but never predicted; c is neither seen nor predicted.
    rows = [("a", 0, (0.9, 0.05, 0.05)), ("b", 1, (0.6, 0.3, 0.1))]

    r = report(predictions(rows), ABC)

    assert r["per_class"][1] == {"label": "b", "support": 1, **scores(0, 0, 0)}
    assert r["per_class"][2] == {"label": "c", "support": 0, **scores(0, 0, 0)}
    assert r["macro"] == scores(1 / 6, 1 / 3, (2 / 3) / 3)
    json.dumps(r, allow_nan=False)


def test_no_predictions_give_a_report_of_zeros() -> None:
    r = report([], list("uvwxyz"))

    assert (r["images"], r["accuracy"], r["top5_accuracy"], r["ece"]) == (0, 0, 0, 0)
    json.dumps(r, allow_nan=False)


def test_a_prediction_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="2 probabilities"):
        report(predictions([("x", 0, (0.5, 0.5))]), ABC)


# --- evaluate, on the squares task of test_engine: a bright square top-left or bottom-right.

CLASSES = ["top_left", "bottom_right"]


def squares(folder: Path, per_class: int, seed: int) -> list[tuple[str, Path, int]]:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    samples = []
    for label, i in itertools.product((0, 1), range(per_class)):
        image = Image.new("RGB", (32, 32))
        image.putdata([tuple(rng.randrange(120) for _ in "rgb") for _ in range(32 * 32)])
        x, y = rng.randrange(1, 5) + 17 * label, rng.randrange(1, 5) + 17 * label
        image.paste((rng.randrange(200, 256),) * 3, (x, y, x + 10, y + 10))
        path = folder / f"{label}_{i}.png"
        image.save(path)
        samples.append((path.stem, path, label))
    return samples


class Quiet:
    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        pass

    def on_epoch(self, metrics: EpochMetrics, checkpoints: list[Checkpoint]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Path, int]]]:
    root = tmp_path_factory.mktemp("evaluate")
    train_set, val_set = squares(root / "train", 16, seed=1), squares(root / "val", 8, seed=2)
    # One epoch leaves a mistake (15/16 here), so the accuracies compared are not two trivial 1.0s.
    h = Hyperparameters(
        model="smallcnn", epochs=1, batch_size=8, learning_rate=3e-3, image_size=32, seed=7
    )
    train_samples = [Sample(path, label) for _, path, label in train_set]
    val_samples = [Sample(path, label) for _, path, label in val_set]
    train(h, CLASSES, train_samples, val_samples, root / "run", "cpu", Quiet())
    return root / "run" / "last.pt", val_set


def test_evaluate_reproduces_the_accuracy_validation_recorded(trained: Any) -> None:
    checkpoint, val = trained

    r = evaluate(checkpoint, val, batch_size=5)  # batches cut differently from training's 8

    history = read_checkpoint(checkpoint)["history"]
    assert (r["checkpoint_epoch"], r["classes"], r["images"]) == (1, CLASSES, 16)
    assert r["accuracy"] == history[-1]["val_accuracy"]
    matrix = r["confusion_matrix"]["matrix"]
    assert r["accuracy"] == sum(matrix[i][i] for i in range(2)) / sum(map(sum, matrix))
    json.dumps(r, allow_nan=False)


def test_evaluate_stops_at_a_batch_boundary(trained: Any) -> None:
    checkpoint, val = trained

    with pytest.raises(EvaluationStopped):
        evaluate(checkpoint, val, should_stop=lambda: True)


def test_evaluate_refuses_a_missing_or_corrupt_checkpoint(trained: Any, tmp_path: Path) -> None:
    _, val = trained
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")

    for path in (tmp_path / "missing.pt", corrupt):
        with pytest.raises(ValueError, match="cannot evaluate"):
            evaluate(path, val)


def test_evaluate_refuses_a_label_outside_the_classes(trained: Any) -> None:
    checkpoint, val = trained

    with pytest.raises(ValueError, match="label 2"):
        evaluate(checkpoint, [*val, ("odd", val[0][1], 2)])

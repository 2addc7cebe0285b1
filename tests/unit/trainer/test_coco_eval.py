"""coco_eval against hand-made cases whose COCO figures are known, and against pycocotools'
own loadRes path on a random case (same numbers, since the studio only translates boxes)."""

from __future__ import annotations

import contextlib
import io
import random

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.vision.coco_eval import ImageBoxes, evaluate_boxes, image_errors, iou

CLASSES = ["circle", "square"]


def image(image_id: str, *boxes: tuple[int, float, float, float, float, float]) -> ImageBoxes:
    return ImageBoxes(image_id=image_id, width=640, height=480, boxes=list(boxes))


def test_perfect_predictions_score_one_everywhere() -> None:
    truths = [image("a", (0, 10, 10, 100, 100, 1.0)), image("b", (1, 200, 100, 150, 120, 1.0))]
    predictions = [
        image("a", (0, 10, 10, 100, 100, 0.9)),
        image("b", (1, 200, 100, 150, 120, 0.8)),
    ]

    metrics = evaluate_boxes(truths, predictions, CLASSES)

    assert (metrics.map, metrics.map50, metrics.map75) == pytest.approx((1.0, 1.0, 1.0))
    assert (
        metrics.map_large == pytest.approx(1.0)
        and metrics.map_medium is None
        and metrics.map_small is None
    )
    for row in metrics.per_class:
        assert (row.ap, row.ap50, row.recall, row.truths) == pytest.approx((1.0, 1.0, 1.0, 1))
    assert [row.label for row in metrics.per_class] == CLASSES


def test_shifted_box_passes_only_the_loose_iou_thresholds() -> None:
    # shifted 20 px on a 100 px box: IoU = 80/120 = 0.667, found at .5 .55 .6 .65 of 10 thresholds
    truths = [image("a", (0, 100, 100, 100, 100, 1.0))]
    predictions = [image("a", (0, 120, 100, 100, 100, 0.9))]

    metrics = evaluate_boxes(truths, predictions, CLASSES)

    assert metrics.map50 == pytest.approx(1.0)
    assert metrics.map75 == 0.0
    assert metrics.map == pytest.approx(0.4)
    assert metrics.per_class[0].recall == pytest.approx(1.0)
    assert metrics.per_class[1].ap is None and metrics.per_class[1].truths == 0


def test_missed_object_halves_recall() -> None:
    truths = [image("a", (0, 10, 10, 50, 50, 1.0), (0, 300, 200, 60, 60, 1.0))]
    predictions = [image("a", (0, 10, 10, 50, 50, 0.9))]

    metrics = evaluate_boxes(truths, predictions, CLASSES)

    # precision 1 up to recall 0.5, nothing beyond: 51 of COCO's 101 recall points
    assert metrics.map50 == pytest.approx(51 / 101)
    assert metrics.per_class[0].recall == pytest.approx(0.5)
    assert metrics.map_medium == pytest.approx(51 / 101)


def test_false_positive_costs_only_when_it_outranks_the_true_box() -> None:
    truths = [image("a", (0, 10, 10, 50, 50, 1.0))]
    below = [image("a", (0, 10, 10, 50, 50, 0.9), (0, 300, 300, 50, 50, 0.5))]
    above = [image("a", (0, 10, 10, 50, 50, 0.5), (0, 300, 300, 50, 50, 0.9))]

    assert evaluate_boxes(truths, below, CLASSES).map50 == pytest.approx(1.0)
    assert evaluate_boxes(truths, above, CLASSES).map50 == pytest.approx(0.5)


def test_wrong_class_is_a_miss_and_small_objects_are_bucketed() -> None:
    truths = [image("a", (0, 10, 10, 20, 20, 1.0)), image("b")]
    predictions = [image("a", (1, 10, 10, 20, 20, 0.9))]

    metrics = evaluate_boxes(truths, predictions, CLASSES)

    assert metrics.map == 0.0 and metrics.map_small == 0.0
    assert metrics.map_medium is None and metrics.map_large is None
    assert metrics.per_class[0].recall == 0.0


def test_no_truth_and_no_prediction_is_zero_not_minus_one() -> None:
    metrics = evaluate_boxes([image("a")], [], CLASSES)

    assert (metrics.map, metrics.map50, metrics.map_small) == (0.0, 0.0, None)
    assert metrics.as_dict()["per_class"][0] == {
        "label": "circle",
        "ap": None,
        "ap50": None,
        "recall": None,
        "truths": 0,
    }


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no truth entry"):
        evaluate_boxes([image("a")], [image("z")], CLASSES)
    with pytest.raises(ValueError, match="class index 2"):
        evaluate_boxes([image("a", (2, 0, 0, 5, 5, 1.0))], [], CLASSES)
    with pytest.raises(ValueError, match="twice"):
        evaluate_boxes([image("a"), image("a")], [], CLASSES)


def test_same_numbers_as_pycocotools_own_load_res_path() -> None:
    rng = random.Random(7)
    truths, predictions = [], []
    for n in range(12):
        gts = [random_box(rng, 1.0) for _ in range(rng.randint(0, 4))]
        dts = [jitter(rng, b) for b in gts if rng.random() < 0.8]
        dts += [random_box(rng, rng.random()) for _ in range(rng.randint(0, 2))]
        truths.append(image(f"img{n}", *gts))
        predictions.append(image(f"img{n}", *dts))

    metrics = evaluate_boxes(truths, predictions, CLASSES)

    stats = reference_stats(truths, predictions)
    assert metrics.map == pytest.approx(stats[0])
    assert metrics.map50 == pytest.approx(stats[1])
    assert metrics.map75 == pytest.approx(stats[2])
    for ours, theirs in zip(
        (metrics.map_small, metrics.map_medium, metrics.map_large), stats[3:6], strict=True
    ):
        assert ours == (None if theirs < 0 else pytest.approx(theirs))


def test_image_errors_counts_misses_and_confident_false_positives() -> None:
    truth = image("a", (0, 10, 10, 50, 50, 1.0), (1, 200, 200, 40, 40, 1.0))
    prediction = image(
        "a",
        (0, 12, 10, 50, 50, 0.9),  # finds truth 0
        (0, 14, 10, 50, 50, 0.8),  # duplicate of truth 0: false positive
        (0, 200, 200, 40, 40, 0.95),  # right place, wrong class: false positive
        (1, 400, 400, 40, 40, 0.2),  # below the score threshold: ignored
    )

    errors = image_errors(truth, prediction)

    assert errors.misses == [1]
    assert errors.false_positives == [1, 2]
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)


def random_box(rng: random.Random, score: float) -> tuple[int, float, float, float, float, float]:
    w, h = rng.uniform(8, 200), rng.uniform(8, 200)
    return (rng.randint(0, 1), rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h, score)


def jitter(
    rng: random.Random, box: tuple[int, float, float, float, float, float]
) -> tuple[int, float, float, float, float, float]:
    k, x, y, w, h, _ = box
    return (k, x + rng.uniform(-8, 8), y + rng.uniform(-8, 8), w, h, rng.random())


def reference_stats(truths: list[ImageBoxes], predictions: list[ImageBoxes]) -> list[float]:
    """COCO's figures the documented way: a ground-truth dataset and ``loadRes`` of results."""
    ids = {t.image_id: n + 1 for n, t in enumerate(truths)}
    anns = [
        {"id": len(ids) * 10 + i, "image_id": ids[t.image_id], "category_id": b[0] + 1}
        | {"bbox": list(b[1:5]), "area": b[3] * b[4], "iscrowd": 0}
        for t in truths
        for i, b in enumerate(t.boxes)
    ]
    for n, ann in enumerate(anns):
        ann["id"] = n + 1
    results = [
        {"image_id": ids[p.image_id], "category_id": b[0] + 1, "bbox": list(b[1:5]), "score": b[5]}
        for p in predictions
        for b in p.boxes
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": ids[t.image_id], "width": 640, "height": 480} for t in truths],
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)],
            "annotations": anns,
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(s) for s in evaluator.stats]

"""Every kind of bad box issue 16 names, in COCO and in YOLO, for a detection project: negative
or zero size, outside the image, unknown category ids, malformed lines and annotations, each
reported against its image's file with the line or annotation at fault, the rest imported; a
box only partly outside its image is kept, clipped to it. (``test_detection_formats.py`` holds
the first cases of each; these are the rest, one image per case.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.datasets.formats import Box, read_manifest
from tests.unit.datasets.test_detection_formats import coco, note, yolo

#: One COCO image per bad annotation (100 x 50 px images, categories 1 "cat" and 2 "dog"), and
#: what its problem says.
COCO_CASES = {
    "negative_width": ([10, 5, -20, 10], 1, "bbox width and height must be above 0"),
    "negative_height": ([10, 5, 20, -1], 1, "bbox width and height must be above 0"),
    "zero_height": ([10, 5, 20, 0], 1, "bbox width and height must be above 0"),
    "three_numbers": ([10, 5, 20], 1, "bbox must be [x, y, width, height] in pixels"),
    "a_word": ([10, 5, 20, "wide"], 1, "bbox must be [x, y, width, height] in pixels"),
    "left_of_image": ([-30, 5, 20, 10], 1, "bbox lies outside its image"),
    "below_image": ([10, 60, 20, 10], 1, "bbox lies outside its image"),
    "category_name": ([10, 5, 20, 10], "cat", "has category_id 'cat'"),
    "category_zero": ([10, 5, 20, 10], 0, "has category_id 0"),
}


def test_each_bad_coco_annotation_is_reported_on_its_image_and_the_good_are_kept(
    tmp_path: Path,
) -> None:
    # given one good image and one image per bad annotation
    names = ("good", *COCO_CASES)
    notes = [note(1, 1, 2, [10, 5, 20, 10])]
    notes += [note(n + 2, n + 2, cat, box) for n, (box, cat, _) in enumerate(COCO_CASES.values())]
    coco(tmp_path, notes, names=names)
    # when a detection project reads it
    manifest = read_manifest(tmp_path, "coco", "detection")
    # then the good image is kept with its box, and each bad one is reported with its reason
    assert [(e.name, e.boxes) for e in manifest.entries] == [
        ("images/good.png", (Box("dog", 0.1, 0.1, 0.2, 0.2),))
    ]
    problems = {p.file: p.reason for p in manifest.label_problems}
    assert set(problems) == {f"images/{name}.png" for name in COCO_CASES}
    for n, (name, (_, _, says)) in enumerate(COCO_CASES.items()):
        assert f"coco.json: annotations[{n + 1}]" in problems[f"images/{name}.png"]
        assert says in problems[f"images/{name}.png"], name


def test_a_coco_box_partly_outside_its_image_is_clipped_to_it(tmp_path: Path) -> None:
    coco(tmp_path, [note(1, 1, 1, [-10, -5, 30, 20]), note(2, 2, 1, [90, 40, 20, 20])],
         names=("a", "b"))  # fmt: skip
    manifest = read_manifest(tmp_path, "coco", "detection")
    assert manifest.label_problems == []
    boxes = {e.name: e.boxes for e in manifest.entries}
    assert boxes["images/a.png"] == (Box("cat", 0.0, 0.0, pytest.approx(0.2), pytest.approx(0.3)),)
    assert boxes["images/b.png"] == (Box("cat", 0.9, 0.8, pytest.approx(0.1), pytest.approx(0.2)),)


#: One YOLO label file per bad line (class names: cat, dog), and what its problem says.
YOLO_CASES = {
    "zero_width": ("0 0.5 0.5 0 0.2", "box width and height must be above 0"),
    "negative_height": ("1 0.5 0.5 0.2 -0.1", "line 1"),
    "centre_outside": ("0 1.5 0.5 0.2 0.2", "1.5 is outside 0-1"),
    "negative_class": ("-1 0.5 0.5 0.2 0.2", "class id -1 is not among the 2 class names"),
    "class_too_big": ("2 0.5 0.5 0.2 0.2", "class id 2 is not among the 2 class names"),
    "fractional_class": ("1.5 0.5 0.5 0.2 0.2", "class id '1.5' is not a whole number"),
    "a_word": ("0 left 0.5 0.2 0.2", "'left' is not a number"),
    "not_a_number": ("0 nan 0.5 0.2 0.2", "nan is outside 0-1"),
    "infinite": ("0 0.5 0.5 inf 0.2", "inf is outside 0-1"),
    "six_fields": ("0 0.5 0.5 0.2 0.2 0.9", "line 1"),
    "second_line_bad": ("0 0.5 0.5 0.2 0.2\n0 0.5", "line 2"),
}


def test_each_bad_yolo_line_is_reported_on_its_image_and_the_good_are_kept(
    tmp_path: Path,
) -> None:
    # given one good label file, one clipped at the edge, and one file per bad line
    labels = {name: line + "\n" for name, (line, _) in YOLO_CASES.items()}
    labels |= {"good": "1 0.5 0.5 0.2 0.2\n", "edge": "0 0.95 0.5 0.2 0.2\n"}
    yolo(tmp_path, labels, images=tuple(labels))
    # when a detection project reads it
    manifest = read_manifest(tmp_path, "yolo", "detection")
    # then the good and the clipped images are kept, each bad file is reported with its line
    boxes = {e.name: e.boxes for e in manifest.entries}
    assert set(boxes) == {"images/train/good.jpg", "images/train/edge.jpg"}
    assert boxes["images/train/good.jpg"] == (
        Box("dog", pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.2), pytest.approx(0.2)),
    )
    (edge,) = boxes["images/train/edge.jpg"]
    assert edge.label == "cat" and edge.x + edge.w == pytest.approx(1.0)
    assert edge.w == pytest.approx(0.15)
    problems = {p.file: p.reason for p in manifest.label_problems}
    assert set(problems) == {f"images/train/{name}.jpg" for name in YOLO_CASES}
    for name, (_, says) in YOLO_CASES.items():
        reason = problems[f"images/train/{name}.jpg"]
        assert reason.startswith(f"labels/train/{name}.txt line ") and says in reason, reason

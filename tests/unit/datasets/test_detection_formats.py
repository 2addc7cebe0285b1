"""Reading COCO and YOLO for a detection project: every box kept whatever its classes, images
without boxes kept as negatives (label ""), and each bad box, line or id reported against its
file while the rest is read; other formats refused (they carry no box)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.datasets.formats import Box, FormatError, Problem, read_manifest
from services.datasets.formats.labels import MAX_BOXES
from tests.unit.datasets.fixtures_formats import image, text


def boxed(root: Path) -> list[tuple[str, str | None, int]]:
    manifest = read_manifest(root, "auto", "detection")
    return [(e.name, e.label, len(e.boxes)) for e in manifest.entries]


def coco(root: Path, annotations: list[dict], names: tuple[str, ...] = ("a", "b", "c")) -> None:
    images = [{"id": i + 1, "file_name": n + ".png", "width": 100, "height": 50}
              for i, n in enumerate(names)]  # fmt: skip
    for name in names:
        image(root / "images" / f"{name}.png")
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    text(root / "coco.json", json.dumps(doc))


def note(n: int, image_id: object, category: object, bbox: object) -> dict:
    return {"id": n, "image_id": image_id, "category_id": category, "bbox": bbox}


def test_coco_keeps_every_box_of_several_classes_and_images_without_boxes_as_negatives(
    tmp_path: Path,
) -> None:
    coco(tmp_path, [note(1, 1, 1, [10, 5, 20, 10]), note(2, 1, 2, [0, 0, 50, 25]),
                    note(3, 1, 2, [60, 20, 30, 20])])  # fmt: skip
    manifest = read_manifest(tmp_path, "coco", "detection")
    assert [(e.name, e.label, len(e.boxes)) for e in manifest.entries] == [
        ("images/a.png", "dog", 3),  # the class with the most boxes
        ("images/b.png", "", 0),
        ("images/c.png", "", 0),
    ]
    assert manifest.entries[0].boxes[0] == Box("cat", 0.1, 0.1, 0.2, 0.2)
    assert manifest.classes == ["cat", "dog"] and manifest.label_problems == []


def test_coco_bad_annotations_are_reported_per_file_and_the_rest_imported(tmp_path: Path) -> None:
    coco(tmp_path, [
        note(1, 1, 1, [10, 5, 20, 10]),
        note(2, 2, 1, [10, 5, 0, 10]),  # zero width
        note(3, 3, 9, [10, 5, 20, 10]),  # unknown category
        note(4, 77, 1, [10, 5, 20, 10]),  # no such image
        note(5, 1, 2, [10, 5, 20, 10]),
    ], names=("a", "b", "c", "d"))  # fmt: skip
    manifest = read_manifest(tmp_path, "auto", "detection")
    assert [(e.name, len(e.boxes)) for e in manifest.entries] == [
        ("images/a.png", 2), ("images/d.png", 0)]  # fmt: skip
    problems = {p.file: p.reason for p in manifest.label_problems}
    assert set(problems) == {"coco.json", "images/b.png", "images/c.png"}
    assert "annotations[1]" in problems["images/b.png"] and "above 0" in problems["images/b.png"]
    assert "category_id 9" in problems["images/c.png"]
    assert "image 77" in problems["coco.json"]


def test_coco_a_box_wholly_outside_its_image_leaves_the_image_out(tmp_path: Path) -> None:
    coco(tmp_path, [note(1, 1, 1, [150, 5, 20, 10]), note(2, 2, 1, [90, 40, 20, 20])])
    manifest = read_manifest(tmp_path, "coco", "detection")
    assert manifest.label_problems == [
        Problem("images/a.png", "coco.json: annotations[0]: bbox lies outside its image")
    ]
    (b,) = (e for e in manifest.entries if e.name == "images/b.png")
    assert b.boxes == (Box("cat", 0.9, 0.8, pytest.approx(0.1), pytest.approx(0.2)),)


def yolo(root: Path, labels: dict[str, str], images: tuple[str, ...]) -> None:
    for name in images:
        image(root / "images" / "train" / f"{name}.jpg")
    for name, lines in labels.items():
        text(root / "labels" / "train" / f"{name}.txt", lines)
    text(root / "data.yaml", "names: [cat, dog]\n")


def test_yolo_keeps_every_box_negatives_and_reports_bad_lines_per_image(tmp_path: Path) -> None:
    yolo(tmp_path, {
        "a": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n1 0.7 0.7 0.1 0.1\n",
        "b": "",  # an empty label file: a negative
        "c": "0 0.5 0.5 0.2\n",  # malformed
        "d": "7 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",  # unknown class id
        "e": "0 0.5 0.5 -0.2 0.2\n",  # negative size
    }, images=("a", "b", "c", "d", "e", "f"))  # fmt: skip
    assert boxed(tmp_path) == [
        ("images/train/a.jpg", "dog", 3),
        ("images/train/b.jpg", "", 0),
        ("images/train/f.jpg", "", 0),  # no label file at all: a negative
    ]
    problems = {
        p.file: p.reason for p in read_manifest(tmp_path, "yolo", "detection").label_problems
    }
    assert "labels/train/c.txt line 1" in problems["images/train/c.jpg"]
    assert "class id 7" in problems["images/train/d.jpg"]
    assert "labels/train/e.txt line 1" in problems["images/train/e.jpg"]


def test_a_classification_project_still_refuses_a_bad_box_whole(tmp_path: Path) -> None:
    coco(tmp_path, [note(1, 1, 1, [10, 5, 0, 10])])
    with pytest.raises(FormatError):
        read_manifest(tmp_path, "coco")


def test_a_detection_project_refuses_a_format_without_boxes(tmp_path: Path) -> None:
    image(tmp_path / "cat" / "a.png")
    with pytest.raises(FormatError) as caught:
        read_manifest(tmp_path, "auto", "detection")
    assert caught.value.field == "format" and "COCO or YOLO" in caught.value.message


def test_an_image_with_more_boxes_than_an_event_can_carry_is_reported(tmp_path: Path) -> None:
    line = "0 0.5 0.5 0.01 0.01\n"
    yolo(tmp_path, {"a": line * (MAX_BOXES + 1), "b": line * 3}, images=("a", "b"))
    manifest = read_manifest(tmp_path, "yolo", "detection")
    assert [(e.name, len(e.boxes)) for e in manifest.entries] == [("images/train/b.jpg", 3)]
    assert "at most" in manifest.label_problems[0].reason


def test_coco_images_listed_but_not_found_are_reported_and_the_rest_imported(
    tmp_path: Path,
) -> None:
    coco(tmp_path, [note(1, 1, 1, [10, 5, 20, 10]), note(2, 2, 2, [10, 5, 20, 10])])
    (tmp_path / "images" / "b.png").unlink()
    manifest = read_manifest(tmp_path, "coco", "detection")
    assert [e.name for e in manifest.entries] == ["images/a.png", "images/c.png"]
    assert manifest.label_problems == [
        Problem("b.png", "listed in the COCO annotations but not found")
    ]
    with pytest.raises(FormatError) as caught:  # a classification project: refused as before
        read_manifest(tmp_path, "coco")
    assert caught.value.code == "MISSING_FILES"

"""A dataset exported as COCO or YOLO (``gateway.dataset_export``) reads back through the
studio's own import (``datasets.formats``, for a detection project) with the same boxes; files
written by a third-party converter (globox) import with every box."""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import pytest
from globox import Annotation, AnnotationSet, BoundingBox
from PIL import Image

from services.datasets.formats import read_manifest
from services.gateway.dataset_export import (
    ExportImage,
    Layout,
    ZipStream,
    annotation_files,
    classes_of,
    image_path,
)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset(split: bool) -> list[ExportImage]:
    """12 images with 0 to 4 boxes of three classes; two share a file name."""
    rng = random.Random(7)
    images = []
    for n in range(12):
        boxes = []
        for _ in range(n % 5):
            x, y = rng.uniform(0, 0.6), rng.uniform(0, 0.6)
            boxes.append({"label": rng.choice(["car", "bike", "traffic light"]), "x": x, "y": y,
                          "w": rng.uniform(0.05, 0.4), "h": rng.uniform(0.05, 0.4)})  # fmt: skip
        name = "same.png" if n in (3, 4) else f"img{n}.png"
        subset = ("train", "val", "test")[n % 3] if split else None
        images.append(ExportImage(f"{n:064x}", f"folder{n % 2}/{name}", boxes[0]["label"]
                                  if boxes else "", 64 + n, 48, "PNG", boxes, subset))  # fmt: skip
    return images


def export(fmt: str, images: list[ExportImage]) -> bytes:
    archive, layout, out = ZipStream(), Layout(), bytearray()
    placed = []
    for image in images:
        name = layout.name(image)
        with archive.open(image_path(name, image.subset)) as entry:
            entry.write(png(image.width, image.height))
        out += archive.take()
        placed.append((image, name))
    for path, data in annotation_files(fmt, placed, classes_of(i for i in images)):
        out += archive.add(path, data)
    return bytes(out + archive.close())


def boxes_by_size(root: Path) -> dict[tuple[int, ...], list[tuple]]:
    """Each imported image's boxes, keyed by its image's size (unique here), rounded."""
    manifest = read_manifest(root, "auto", "detection")
    assert manifest.label_problems == [] and manifest.skipped == []
    found = {}
    for entry in manifest.entries:
        size = Image.open(entry.path).size
        found[size] = sorted((b.label, *(round(v, 6) for v in (b.x, b.y, b.w, b.h)))
                             for b in entry.boxes)  # fmt: skip
    return found


def expected(images: list[ExportImage]) -> dict[tuple[int, ...], list[tuple]]:
    return {(i.width, i.height): sorted((b["label"], *(round(b[k], 6) for k in "xywh"))
                                        for b in i.boxes) for i in images}  # fmt: skip


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
@pytest.mark.parametrize("split", [False, True])
def test_an_export_reads_back_with_the_same_boxes(tmp_path: Path, fmt: str, split: bool) -> None:
    images = dataset(split)
    zipfile.ZipFile(io.BytesIO(export(fmt, images))).extractall(tmp_path)
    assert boxes_by_size(tmp_path) == expected(images)
    if split:
        manifest = read_manifest(tmp_path, "auto", "detection")
        by_size = {Image.open(e.path).size: e.split for e in manifest.entries}
        assert by_size == {(i.width, i.height): i.subset for i in images}


def test_clashing_names_are_made_unique_by_stem_within_a_folder() -> None:
    layout = Layout()
    a = ExportImage("a" * 64, "x/cat.png", "", 1, 1, "PNG", [])
    b = ExportImage("b" * 64, "y/cat.jpg", "", 1, 1, "JPEG", [])
    c = ExportImage("c" * 64, "y/CAT.png", "", 1, 1, "PNG", [], "val")
    assert [layout.name(i) for i in (a, b, c)] == ["cat.png", f"cat-{'b' * 12}.jpg", "CAT.png"]


def test_a_classification_image_exports_to_coco_as_a_label_without_a_box(tmp_path: Path) -> None:
    image = ExportImage("d" * 64, "cats/a.png", "cat", 8, 8, "PNG", [])
    zipfile.ZipFile(io.BytesIO(export("coco", [image]))).extractall(tmp_path)
    doc = json.loads((tmp_path / "annotations" / "instances.json").read_text())
    assert doc["annotations"] == [{"id": 1, "image_id": 1, "category_id": 1, "bbox": []}]
    assert [(e.name, e.label) for e in read_manifest(tmp_path).entries] == [("images/a.png", "cat")]


def globox_set(root: Path) -> AnnotationSet:
    """Five images, 0 to 4 boxes each, in pixels, and the images themselves under images/."""
    rng = random.Random(3)
    annotations = []
    for n in range(5):
        width, height = 80 + n, 60
        boxes = []
        for _ in range(n):
            x, y = rng.randint(0, 40), rng.randint(0, 30)
            right, bottom = x + rng.randint(5, 35), y + rng.randint(5, 25)
            label = rng.choice(["dog", "cat"])
            boxes.append(BoundingBox(label=label, xmin=x, ymin=y, xmax=right, ymax=bottom))
        annotations.append(Annotation(f"p{n}.png", (width, height), boxes))
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"p{n}.png").write_bytes(png(width, height))
    return AnnotationSet(annotations)


def globox_boxes(annotations: AnnotationSet) -> dict[tuple[int, ...], list[tuple]]:
    found = {}
    for a in annotations:
        w, h = a.image_size
        found[a.image_size] = sorted((b.label, round(b.xmin / w, 6), round(b.ymin / h, 6),
                                      round(b.width / w, 6), round(b.height / h, 6))
                                     for b in a.boxes)  # fmt: skip
    return found


def test_a_coco_file_written_by_globox_imports_with_every_box(tmp_path: Path) -> None:
    annotations = globox_set(tmp_path)
    annotations.save_coco(tmp_path / "annotations.json", auto_ids=True)
    assert boxes_by_size(tmp_path) == globox_boxes(annotations)


def test_a_yolo_folder_written_by_globox_imports_with_every_box(tmp_path: Path) -> None:
    annotations = globox_set(tmp_path)
    annotations.save_yolo_darknet(tmp_path / "labels", label_to_id={"cat": 0, "dog": 1})
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert boxes_by_size(tmp_path) == globox_boxes(annotations)
    assert sum(len(a.boxes) for a in annotations) == 10

"""Builders of small datasets and archives on disk, for the sources and formats tests.

Each builder writes one well-formed example of a layout under a folder it is given, so a test can
start from it and break exactly one thing.
"""

from __future__ import annotations

import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image


@cache
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def image(path: Path) -> Path:
    """A tiny real PNG (whatever the file's extension says: nothing here decodes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes())
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def folder_dataset(root: Path) -> Path:
    """root/{train,valid}/{cat,dog}/*.png"""
    for split in ("train", "valid"):
        for label in ("cat", "dog"):
            image(root / split / label / f"{label}1.png")
    return root


def csv_dataset(root: Path) -> Path:
    """labels.csv at the top with a header and a split column; images beside it."""
    image(root / "a.png")
    image(root / "b.jpg")
    text(root / "labels.csv", "filename,label,split\na.png,cat,train\nb.jpg,dog,val\n")
    return root


def coco_json(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> str:
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return json.dumps({"images": images, "annotations": annotations, "categories": categories})


def coco_dataset(root: Path) -> Path:
    """annotations/instances_train.json naming train/a.png, with one cat box."""
    image(root / "train" / "a.png")
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}]
    boxes = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10]}]
    text(root / "annotations" / "instances_train.json", coco_json(images, boxes))
    return root


def yolo_dataset(root: Path) -> Path:
    """images/train + labels/train with data.yaml naming two classes."""
    image(root / "images" / "train" / "a.jpg")
    text(root / "labels" / "train" / "a.txt", "1 0.5 0.5 0.2 0.4\n")
    text(root / "data.yaml", "names: [cat, dog]\n")
    return root

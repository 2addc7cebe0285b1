"""A generated detection dataset that a detector learns in a few CPU epochs: large coloured
shapes (a red disc, a green square, a blue triangle) on noisy grey backgrounds, one to two per
image, seeded so every run draws the same images, and a few negatives (no shape at all).

``draw`` makes one image with its boxes (``contracts.datasets.Box``'s convention: normalised
top-left x, y, width, height); ``write_coco`` writes a folder the studio imports as COCO.
Imports Pillow, numpy and the standard library only.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disc", "square", "triangle")
COLOURS = {"disc": (230, 40, 40), "square": (40, 200, 60), "triangle": (40, 90, 240)}
#: (label, x, y, w, h), normalised to [0, 1].
Box = tuple[str, float, float, float, float]


def draw(seed: int, size: int = 128, *, negative: bool = False) -> tuple[Image.Image, list[Box]]:
    """One ``size`` x ``size`` image and its boxes: 1-2 shapes of a quarter to a half of the
    side, not overlapping, on Gaussian grey noise; none when ``negative``."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed).normal(128, 30, (size, size, 3))
    image = Image.fromarray(noise.clip(0, 255).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(image)
    boxes: list[Box] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(0 if negative else rng.randint(1, 2)):
        label = rng.choice(CLASSES)
        side = rng.randint(size // 4, size // 2)
        for _attempt in range(20):
            x, y = rng.randint(0, size - side), rng.randint(0, size - side)
            box = (x, y, x + side, y + side)
            if not any(_overlap(box, other) for other in taken):
                break
        else:
            continue
        taken.append(box)
        _shape(pen, label, box)
        boxes.append((label, x / size, y / size, side / size, side / size))
    return image, boxes


def write_coco(root: Path, count: int, *, seed: int = 0, size: int = 128) -> list[list[Box]]:
    """``count`` images (every tenth a negative) under ``root/images`` and their boxes in
    ``root/annotations.json``, in COCO's format; returns each image's boxes."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    drawn: list[list[Box]] = []
    for n in range(count):
        image, boxes = draw(seed * 100_003 + n, size, negative=n % 10 == 9)
        image.save(root / "images" / f"s{n:04d}.png")
        images.append({"id": n + 1, "file_name": f"s{n:04d}.png", "width": size, "height": size})
        for label, x, y, w, h in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n + 1,
                    "category_id": CLASSES.index(label) + 1,
                    "bbox": [x * size, y * size, w * size, h * size],
                    "area": w * h * size * size,
                    "iscrowd": 0,
                }
            )
        drawn.append(boxes)
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(doc))
    return drawn


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _shape(pen: ImageDraw.ImageDraw, label: str, box: tuple[int, int, int, int]) -> None:
    colour = COLOURS[label]
    x0, y0, x1, y1 = box
    if label == "disc":
        pen.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
    elif label == "square":
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    else:
        pen.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)

"""Small image datasets made with Pillow, in each import format, for the tests.

Each image is seeded noise, so images differ in their perceptual hash unless made alike on
purpose (``near_copy``).
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

from PIL import Image


def noise(seed: int, size: int = 32) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size))
    img.putdata(
        [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size * size)]
    )
    return img


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write(path: Path, seed: int, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise(seed).save(path, fmt)
    return path


def folder(root: Path, classes: dict[str, int], start: int = 0) -> Path:
    """root/<class>/<class>_<i>.png with distinct images."""
    seed = start
    for label, count in classes.items():
        for i in range(count):
            write(root / label / f"{label}_{i}.png", seed)
            seed += 1
    return root


def csv_set(root: Path, rows: list[tuple[str, str]], header: bool = True, start: int = 0) -> Path:
    lines = ["filename,label"] if header else []
    for i, (name, label) in enumerate(rows):
        write(root / "images" / name, start + i)
        lines.append(f"images/{name},{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def coco_set(root: Path, labels: list[str], start: int = 0) -> Path:
    categories = sorted(set(labels))
    cat_ids = {name: i + 1 for i, name in enumerate(categories)}
    images, annotations = [], []
    for i, label in enumerate(labels):
        write(root / "images" / f"img{i}.png", start + i)
        images.append({"id": i + 1, "file_name": f"img{i}.png", "width": 32, "height": 32})
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": cat_ids[label], "bbox": [2, 2, 10, 12]}
        )
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
    }
    (root / "instances.json").write_text(json.dumps(doc))
    return root


def yolo_set(root: Path, labels: list[int], names: list[str], start: int = 0) -> Path:
    for i, cls in enumerate(labels):
        write(root / "images" / f"img{i}.png", start + i)
        label_file = root / "labels" / f"img{i}.txt"
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text(f"{cls} 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("names: [" + ", ".join(names) + "]\n")
    return root


def zip_dir(src: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src).as_posix())
    return archive


def heavy(root: Path, count: int, size: int = 512) -> Path:
    """``count`` large noise PNGs in two classes: slow enough to decode that a test can act
    while an import of them runs."""
    for i in range(count):
        path = root / f"c{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(i)
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(
            path, "PNG", compress_level=1
        )
    return root


def squares(root: Path, per_class: int, size: int = 32, start: int = 0) -> Path:
    """A learnable two-class set: a bright square top-left (``tl``) or bottom-right (``br``),
    on noise."""
    for label in ("tl", "br"):
        for i in range(per_class):
            rng = random.Random(start + i * 2 + (label == "br"))
            img = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
            q = size // 3
            x = rng.randrange(0, 3) + (0 if label == "tl" else size - q - 3)
            img.paste((255, 255, 255), (x, x, x + q, x + q))
            path = root / label / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
    return root

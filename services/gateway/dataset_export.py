"""A dataset written back out as COCO or YOLO, as a ZIP streamed piece by piece.

``Layout`` names every exported image once (its file name, made unique within its folder by
its id where two would clash, stems included so YOLO's label files never clash either) and
writes the annotation files from the images' rows as the read model keeps them (normalised
boxes, the current label):

- COCO: ``annotations/instances[_<subset>].json`` beside ``images/[<subset>/]<name>``, boxes in
  pixels (``[x, y, width, height]``), categories numbered from 1 by name. An image with no box
  but a label (a classification image) gets one annotation without a bbox; a detection
  negative gets none.
- YOLO: ``images/[<subset>/]<name>`` and ``labels/[<subset>/]<stem>.txt`` (``class cx cy w h``,
  fractions; an empty file for a negative) with ``data.yaml`` naming the classes in order.

Both read back through the studio's own import with the same boxes (within float rounding).
``ZipStream`` turns entries into ZIP bytes as they are written (``zipfile`` on a write-only
sink, data descriptors instead of seeks), images stored as they are, text deflated, so an
export of any size is never whole in memory. Pure: imports the standard library only.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

FORMATS = ("coco", "yolo")
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
          "TIFF": ".tiff", "MPO": ".jpg"}  # fmt: skip


@dataclass(frozen=True)
class ExportImage:
    """An image as the read model keeps it; ``subset`` is None for an export without a split."""

    image_id: str
    filename: str
    label: str
    width: int
    height: int
    format: str
    boxes: Sequence[Mapping[str, Any]]
    subset: str | None = None


@dataclass
class Layout:
    """Where each image goes in the archive, unique within its folder (by stem, any case)."""

    taken: set[tuple[str | None, str]] = field(default_factory=set)

    def name(self, image: ExportImage) -> str:
        base = posixpath.basename(image.filename) or image.image_id
        stem, suffix = posixpath.splitext(base)
        suffix = suffix or SUFFIX.get(image.format, "")
        if (image.subset, stem.lower()) in self.taken:
            stem = f"{stem}-{image.image_id[:12]}"
        self.taken.add((image.subset, stem.lower()))
        return stem + suffix


def image_path(name: str, subset: str | None) -> str:
    return posixpath.join("images", subset, name) if subset else posixpath.join("images", name)


def classes_of(images: Iterable[ExportImage]) -> list[str]:
    """Every class the images show (box labels, and the labels of images without a box)."""
    found: set[str] = set()
    for image in images:
        found |= {box["label"] for box in image.boxes}
        if image.label and not image.boxes:
            found.add(image.label)
    return sorted(found)


def coco_document(images: Sequence[tuple[ExportImage, str]], classes: Sequence[str]) -> bytes:
    """One COCO JSON of ``images`` (each with its name in the archive)."""
    category = {name: n for n, name in enumerate(classes, start=1)}
    doc_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for number, (image, name) in enumerate(images, start=1):
        doc_images.append({"id": number, "file_name": name, "width": image.width,
                           "height": image.height})  # fmt: skip
        for box in image.boxes:
            w, h = image.width, image.height
            bbox = [box["x"] * w, box["y"] * h, box["w"] * w, box["h"] * h]
            annotations.append({"id": len(annotations) + 1, "image_id": number,
                                "category_id": category[box["label"]], "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
        if not image.boxes and image.label:
            annotations.append({"id": len(annotations) + 1, "image_id": number,
                                "category_id": category[image.label], "bbox": []})  # fmt: skip
    categories = [{"id": n, "name": name, "supercategory": ""} for name, n in category.items()]
    doc = {"images": doc_images, "annotations": annotations, "categories": categories}
    return json.dumps(doc, ensure_ascii=False).encode()


def yolo_lines(image: ExportImage, classes: Sequence[str]) -> bytes:
    """An image's YOLO label file: ``class cx cy w h`` per box, fractions of the image."""
    index = {name: n for n, name in enumerate(classes)}
    lines = []
    for box in image.boxes:
        cx, cy = box["x"] + box["w"] / 2, box["y"] + box["h"] / 2
        numbers = " ".join(_fraction(v) for v in (cx, cy, box["w"], box["h"]))
        lines.append(f"{index[box['label']]} {numbers}\n")
    return "".join(lines).encode()


def _fraction(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.10f}".rstrip("0").rstrip(".") or "0"


def yolo_yaml(classes: Sequence[str], subsets: Sequence[str]) -> bytes:
    """``data.yaml``: the class names in index order (JSON strings are valid YAML scalars)."""
    lines = [f"nc: {len(classes)}", "names:"]
    lines += [f"  {n}: {json.dumps(name, ensure_ascii=False)}" for n, name in enumerate(classes)]
    for subset in subsets:
        lines.append(f"{subset}: images/{subset}")
    return ("\n".join(lines) + "\n").encode()


def label_path(name: str, subset: str | None) -> str:
    stem = posixpath.splitext(name)[0] + ".txt"
    return posixpath.join("labels", subset, stem) if subset else posixpath.join("labels", stem)


def coco_path(subset: str | None) -> str:
    return f"annotations/instances_{subset}.json" if subset else "annotations/instances.json"


class _Sink:
    """A write-only file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class ZipStream:
    """A ZIP written entry by entry; ``take`` answers the bytes written since the last take."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(cast(IO[bytes], self._sink), "w", allowZip64=True)

    def add(self, path: str, data: bytes) -> bytes:
        """A text entry, deflated; answers the bytes ready."""
        self._zip.writestr(path, data, compress_type=zipfile.ZIP_DEFLATED)
        return self._sink.take()

    def open(self, path: str) -> IO[bytes]:
        """A stored entry written piece by piece (an image: already compressed)."""
        info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        return self._zip.open(info, "w", force_zip64=True)

    def take(self) -> bytes:
        return self._sink.take()

    def close(self) -> bytes:
        self._zip.close()
        return self._sink.take()


def annotation_files(
    fmt: str, placed: Sequence[tuple[ExportImage, str]], classes: Sequence[str]
) -> Iterator[tuple[str, bytes]]:
    """The annotation files of an export whose images were placed as ``placed``."""
    subsets = sorted({image.subset for image, _ in placed if image.subset is not None})
    if fmt == "yolo":
        yield "data.yaml", yolo_yaml(classes, subsets)
        for image, name in placed:
            yield label_path(name, image.subset), yolo_lines(image, classes)
        return
    folders: list[str | None] = [*subsets] or [None]
    for subset in folders:
        members = [(image, name) for image, name in placed if image.subset == subset]
        yield coco_path(subset), coco_document(members, classes)

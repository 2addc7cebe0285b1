"""A detector's checkpoint run over images with their true boxes, scored by COCO's metrics.

Each image goes through the transform a detector's validation uses (``detection_transform``,
no augmentation); the model's boxes, in the pixels of that tensor, are scaled to the image's
own upright size, and so are the true boxes (normalised ``Box``es), so that COCO's
small/medium/large buckets mean what they mean in COCO and in the dataset's health report.
``services.vision.coco_eval`` computes the figures; the worst images are those with the most
misses and false positives at ``SCORE_THRESHOLD`` and IoU ``IOU_THRESHOLD``. Imports torch,
torchvision, Pillow, ``services.vision`` and the engine's own modules only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from services.trainer.engine.detection import detection_transform
from services.vision.coco_eval import ImageBoxes, evaluate_boxes, image_errors
from services.vision.preprocess import load_image

#: A true box: (class index, x, y, w, h) normalised to [0, 1], x and y the top-left corner.
Box = tuple[int, float, float, float, float]
#: (image_id, path, class index (unused by a detector), its true boxes)
BoxedImage = tuple[str, Path, int, Sequence[Box]]

#: A prediction counts (as found or as a false positive) from this score on.
SCORE_THRESHOLD = 0.5
#: A prediction finds a truth of its class that it overlaps at least this much.
IOU_THRESHOLD = 0.5
#: The images listed as the worst, and the boxes listed for each of them at most.
WORST_LIMIT = 24
BOXES_LIMIT = 100
#: Images per forward pass: a detector's activations are large next to a classifier's.
BATCH_MAX = 8
#: EXIF orientations that turn an image a quarter: its upright width is its stored height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class Scored:
    """One image's truths and predictions, both in the pixels of its upright original."""

    truth: ImageBoxes
    prediction: ImageBoxes


def evaluate_detector(
    model: nn.Module, classes: list[str], size: int, samples: Sequence[BoxedImage],
    device: str, batch_size: int, should_stop: Callable[[int, int], None],
) -> dict[str, Any]:  # fmt: skip
    """COCO's figures of ``model`` (in eval mode) on ``samples``, and the worst images.
    ``should_stop(batch, batches)`` is called before every batch and raises to stop."""
    for image_id, _, _, boxes in samples:
        for box in boxes:
            if not 0 <= box[0] < len(classes):
                raise ValueError(f"box label {box[0]} of {image_id!r} is not a class index")
    dev = torch.device(device)
    model.to(dev).eval()
    loader = DataLoader(
        _Images(samples, size),
        batch_size=max(1, min(batch_size, BATCH_MAX)),
        num_workers=0,
        collate_fn=list,
    )
    scored: list[Scored] = []
    with torch.inference_mode():
        for batch, items in enumerate(loader):
            should_stop(batch, len(loader))
            outputs = model([tensor.to(dev) for _, tensor, _ in items])
            scored += [_scored(item, output) for item, output in zip(items, outputs, strict=True)]
    found = evaluate_boxes([s.truth for s in scored], [s.prediction for s in scored], classes)
    return {
        "task": "detection",
        **found.as_dict(),
        "images": len(scored),
        "boxes": sum(len(s.truth.boxes) for s in scored),
        "score_threshold": SCORE_THRESHOLD,
        "iou_threshold": IOU_THRESHOLD,
        "worst": worst(scored, classes),
    }


def worst(scored: Sequence[Scored], classes: Sequence[str]) -> list[dict[str, Any]]:
    """The images with the most errors (misses plus false positives), most first, then the
    most misses; each with its boxes normalised, truths marked ``missed`` and predictions at
    the score threshold marked ``false_positive``."""
    ranked = []
    for s in scored:
        errors = image_errors(
            s.truth, s.prediction, iou_threshold=IOU_THRESHOLD, score_threshold=SCORE_THRESHOLD
        )
        total = len(errors.misses) + len(errors.false_positives)
        if total:
            ranked.append((-total, -len(errors.misses), s.truth.image_id, s, errors))
    ranked.sort(key=lambda r: r[:3])
    listed = []
    for _, _, image_id, s, errors in ranked[:WORST_LIMIT]:
        missed, wrong = set(errors.misses), set(errors.false_positives)
        shown = [i for i, b in enumerate(s.prediction.boxes) if b[5] >= SCORE_THRESHOLD]
        truths = [
            _public(b, s.truth, classes) | {"missed": i in missed}
            for i, b in enumerate(s.truth.boxes)
        ]
        predictions = [
            _public(s.prediction.boxes[i], s.truth, classes, score=True)
            | {"false_positive": i in wrong}
            for i in shown
        ]
        listed.append(
            {
                "image_id": image_id,
                "misses": len(missed),
                "false_positives": len(wrong),
                "truths": truths[:BOXES_LIMIT],
                "predictions": predictions[:BOXES_LIMIT],
            }
        )
    return listed


def _public(
    box: tuple[int, float, float, float, float, float],
    image: ImageBoxes,
    classes: Sequence[str],
    *,
    score: bool = False,
) -> dict[str, Any]:
    """A box as the studio shows one: its class name and x, y, w, h normalised to [0, 1]."""
    k, x, y, w, h, confidence = box
    width, height = max(image.width, 1), max(image.height, 1)
    shown: dict[str, Any] = {
        "label": classes[k],
        "x": round(x / width, 5),
        "y": round(y / height, 5),
        "w": round(w / width, 5),
        "h": round(h / height, 5),
    }
    if score:
        shown["score"] = round(confidence, 5)
    return shown


def _scored(item: tuple[BoxedImage, Tensor, tuple[int, int]], output: dict[str, Tensor]) -> Scored:
    (image_id, _, _, boxes), tensor, (width, height) = item
    sx, sy = width / tensor.shape[-1], height / tensor.shape[-2]
    truths = [(k, x * width, y * height, w * width, h * height, 1.0) for k, x, y, w, h in boxes]
    predicted = [
        (int(label) - 1, x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy, float(score))
        for (x0, y0, x1, y1), label, score in zip(
            output["boxes"].float().cpu().tolist(),
            output["labels"].cpu().tolist(),
            output["scores"].float().cpu().tolist(),
            strict=True,
        )
    ]
    return Scored(
        ImageBoxes(image_id, width, height, truths), ImageBoxes(image_id, width, height, predicted)
    )


def upright_size(path: Path) -> tuple[int, int]:
    """The image's (width, height) once its EXIF orientation is applied, from its header."""
    with Image.open(path) as file:
        width, height = file.size
        orientation = file.getexif().get(0x0112)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


class _Images(Dataset[tuple[BoxedImage, Tensor, tuple[int, int]]]):
    """Decodes one image per index as validation does; holds no decoded image."""

    def __init__(self, samples: Sequence[BoxedImage], size: int) -> None:
        self.samples, self.size = list(samples), size
        self.transform = detection_transform("none", size, train=False)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[BoxedImage, Tensor, tuple[int, int]]:
        sample = self.samples[index]
        image = load_image(sample[1], self.size)
        # The transform sanitises boxes, so it takes a (here empty) target beside the image.
        empty = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.zeros((0, 4)), format="XYXY", canvas_size=(image.height, image.width)
            ),
            "labels": torch.zeros((0,), dtype=torch.int64),
        }
        tensor, _ = self.transform(image, empty)
        return sample, tensor.as_subclass(Tensor), upright_size(sample[1])

"""What a detector export's image goes through, and what its outputs mean: the pieces that
export, parity and prediction share, so the three cannot drift.

An image is made upright RGB (transparency on white, as for classifiers), resized so its longer
side is the input size (aspect kept, bilinear with antialias, as the trainer's detection
validation resizes it), scaled to [0, 1] and pasted top-left on a square of the input size
filled with ImageNet's mean colour (zero once the detector normalises it, as torchvision pads
its own batches). The detector normalises inside the model. Boxes come out in pixels of that
square (``xyxy``), labels 1..K for ``classes[label - 1]``, scores; dividing by the resize scale
and the image's size gives boxes normalised like ``contracts.datasets.Box``.

Imports torch, torchvision and Pillow; ``services.vision`` for the shared preprocessing.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as tvf

from services.vision.preprocess import IMAGENET_MEAN, IMAGENET_STD

#: One detection: (class name, score, x, y, w, h), the box normalised to [0, 1], top-left x/y.
Detection = tuple[str, float, float, float, float, float]
TASK = "detection"


def letterbox(image: Image.Image, size: int) -> tuple[Tensor, float]:
    """``image`` as the detector export's ``3 x size x size`` input, and the resize scale."""
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pixels = tvf.pil_to_tensor(image)
    resized = tvf.resize(pixels, [new_h, new_w], antialias=True)
    scaled = tvf.to_dtype(resized, torch.float32, scale=True)
    canvas = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1).repeat(1, size, size)
    canvas[:, :new_h, :new_w] = scaled
    return canvas, scale


def score_threshold(model: nn.Module) -> float:
    """The score under which the detector itself drops detections (torchvision's setting)."""
    holder = getattr(model, "roi_heads", model)
    return float(getattr(holder, "score_thresh", 0.0))


def max_detections(model: nn.Module) -> int:
    holder = getattr(model, "roi_heads", model)
    return int(getattr(holder, "detections_per_img", 100))


def metadata(size: int, classes: list[str], threshold: float, cap: int) -> dict[str, Any]:
    """The detector export's preprocessing and outputs as data, for its metadata and card."""
    return {
        "task": TASK,
        "input_size": size,
        "resize": "longer_side_then_pad_bottom_right",
        "pad_value": list(IMAGENET_MEAN),
        "interpolation": "bilinear_antialias",
        "scale": "1/255",
        "normalize": "inside_model",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "channel_order": "RGB",
        "layout": "NCHW",
        "batch": 1,
        "exif_transpose": True,
        "alpha": "composite_on_white",
        "outputs": {
            "boxes": "float32 [N, 4] x1 y1 x2 y2 in pixels of the padded input",
            "labels": "int64 [N], 1..K: classes[label - 1]",
            "scores": "float32 [N], descending",
        },
        "score_threshold": threshold,
        "max_detections": cap,
        "classes": classes,
    }


class Exportable(nn.Module):
    """A torchvision detector as one image tensor ``[1, 3, S, S]`` in, ``(boxes, labels,
    scores)`` out: the shape ONNX can carry (a list of dicts cannot be a graph output)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        found = self.detector([image[0]])[0]
        return found["boxes"], found["labels"], found["scores"]


def normalised(
    boxes: Any, labels: Any, scores: Any, classes: list[str], scale: float, size: tuple[int, int]
) -> list[Detection]:
    """The export's outputs for one image as detections on that image, boxes clipped to it."""
    width, height = size
    found: list[Detection] = []
    rows = zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True)
    for (x1, y1, x2, y2), label, score in rows:
        left, top = _clip(x1 / scale / width), _clip(y1 / scale / height)
        right, bottom = _clip(x2 / scale / width), _clip(y2 / scale / height)
        name = classes[int(label) - 1] if 1 <= int(label) <= len(classes) else str(label)
        found.append((name, float(score), left, top, right - left, bottom - top))
    return found


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))

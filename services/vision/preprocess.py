"""What an image goes through before a model sees it, outside training's augmentation: upright,
RGB (transparency on white), shorter side resized to the input size, centre-cropped square,
scaled to [0, 1] and normalised with ImageNet's mean and std, channels first.

The trainer evaluates with it, the exporter checks parity with it and stores it in the ONNX
model's metadata, and prediction applies it: one definition, so the three cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WHITE = (255, 255, 255)


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, RGB, transparent pixels shown on white as the studio shows them."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def load_image(path: Path, size: int) -> Image.Image:
    """``path`` upright in RGB; JPEGs decode at the smallest scale still twice ``size``."""
    with Image.open(path) as file:
        file.draft("RGB", (2 * size, 2 * size))  # large photos: a fraction of time and memory
        return upright_rgb(file)


def eval_transform(size: int) -> Callable[[Image.Image], Tensor]:
    return v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def metadata(size: int, classes: list[str]) -> dict[str, Any]:
    """The preprocessing as data, for an exported model's metadata."""
    return {
        "input_size": size,
        "resize": "shorter_side_then_center_crop",
        "interpolation": "bilinear_antialias",
        "scale": "1/255",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "channel_order": "RGB",
        "layout": "NCHW",
        "exif_transpose": True,
        "alpha": "composite_on_white",
        "classes": classes,
    }

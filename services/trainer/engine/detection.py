"""Training a detector: box-aware augmentation, batches of targets, the loss components, and
validation by COCO mAP (``services.vision.coco_eval``).

Images reach the model as [0, 1] tensors whose longer side is the run's image size (the
detector normalises and resizes them itself); their boxes go from the studio's normalised
``(x, y, w, h)`` to torchvision's pixel ``xyxy`` as ``tv_tensors.BoundingBoxes``, so flips and
photometric changes move the boxes with the pixels, and ``SanitizeBoundingBoxes`` drops a box
too small to train on. An image without boxes is a negative: it trains the background.
Imports torch, torchvision, ``contracts.training``, ``services.vision`` and the engine's own
modules only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from contracts.training import Hyperparameters
from services.trainer.engine.api import Sample
from services.trainer.engine.seeding import isolated_rng
from services.trainer.engine.tasks import Batch, Validation
from services.vision.coco_eval import ImageBoxes, evaluate_boxes
from services.vision.detectors import build_detector
from services.vision.preprocess import load_image

Target = dict[str, Tensor]


def detection_transform(augmentation: str, size: int, *, train: bool) -> v2.Compose:
    """Longer side to ``size``; in training the preset's flips and colour changes, which move
    the boxes with the image."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize(size=None, max_size=size, antialias=True)]
    if train and augmentation != "none":
        steps.append(v2.RandomHorizontalFlip())
    if train and augmentation == "standard":
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)


def target_of(sample: Sample, width: int, height: int) -> Target:
    """``sample``'s boxes in pixels of a ``width`` x ``height`` image (xyxy, labels 1..K)."""
    pixels = [
        [x * width, y * height, (x + w) * width, (y + h) * height] for _, x, y, w, h in sample.boxes
    ]
    boxes = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "labels": torch.tensor([box[0] + 1 for box in sample.boxes], dtype=torch.int64),
    }


class DetectionDataset(Dataset[tuple[Tensor, Target]]):
    """Decodes one sample per key (index, augmentation seed) with its boxes as targets."""

    def __init__(self, samples: Sequence[Sample], transform: v2.Compose, size: int) -> None:
        self.samples, self.transform, self.size = list(samples), transform, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Target]:
        index, seed = key
        sample = self.samples[index]
        image = load_image(sample.path, self.size)
        target = target_of(sample, *image.size)
        with isolated_rng(seed):
            tensor, target = self.transform(image, target)
        return tensor.as_subclass(Tensor), {k: v.as_subclass(Tensor) for k, v in target.items()}


def collate(items: list[Any]) -> Batch:
    """A batch as torchvision's detectors take it: a list of images, a list of targets (from
    the ``(image, target)`` pairs of ``DetectionDataset``)."""
    return [image for image, _ in items], [target for _, target in items]


class Detection:
    """A detector: torchvision's own losses, validated by COCO mAP."""

    name = "detection"
    collate = staticmethod(collate)
    distributed = False

    def __init__(self) -> None:
        self.classes: list[str] = []

    def check(self, classes: Sequence[str], samples: Sequence[Sample]) -> None:
        if not classes:
            raise ValueError("a detector needs at least one class")
        for sample in samples:
            for box in sample.boxes:
                if not 0 <= box[0] < len(classes):
                    raise ValueError(f"box label {box[0]} of {sample.path} is not a class index")

    def build(
        self, h: Hyperparameters, classes: int, pretrained: Path | None, *,
        like: Mapping[str, Any] | None = None,
    ) -> nn.Module:  # fmt: skip
        if pretrained is not None:
            raise ValueError("a detector trains from scratch: pretrained weights are not taken")
        # A run started before detectors normalised by GroupNorm resumes with its BatchNorm.
        return build_detector(h.model, classes, h.image_size, like=like)

    def dataset(
        self, samples: Sequence[Sample], h: Hyperparameters, *, train: bool
    ) -> Dataset[Any]:
        transform = detection_transform(h.augmentation, h.image_size, train=train)
        return DetectionDataset(samples, transform, h.image_size)

    def prepare(
        self, h: Hyperparameters, train: Sequence[Sample], classes: int, device: torch.device
    ) -> None:
        self.classes = [str(i) for i in range(classes)]

    def to_device(self, batch: Batch, device: torch.device, channels_last: bool) -> Batch:
        images, targets = batch
        moved = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        return [image.to(device, non_blocking=True) for image in images], moved

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        images, targets = batch
        components: dict[str, Tensor] = model(images, targets)
        return torch.stack(list(components.values())).sum(), components

    def validate(
        self,
        model: nn.Module,
        batches: Iterator[Batch],
        amp: Callable[[], Any],
        device: torch.device,
    ) -> Validation:
        """Mean validation loss (train-mode losses with BatchNorm frozen) and COCO mAP."""
        truths: list[ImageBoxes] = []
        predictions: list[ImageBoxes] = []
        loss, seen = 0.0, 0
        for images, targets in batches:
            with amp():
                loss += float(_frozen_losses(model, images, targets)) * len(images)
                outputs = model(images)
            for image, target, output in zip(images, targets, outputs, strict=True):
                image_id = str(len(truths))
                height, width = int(image.shape[-2]), int(image.shape[-1])
                truths.append(ImageBoxes(image_id, width, height, _pixel_boxes(target)))
                predictions.append(ImageBoxes(image_id, width, height, _pixel_boxes(output)))
            seen += len(images)
        found = evaluate_boxes(truths, predictions, self.classes)
        return Validation(loss / max(seen, 1), 0.0, found.map, found.map50)


def _frozen_losses(model: nn.Module, images: list[Tensor], targets: list[Target]) -> Tensor:
    """The detector's training losses on a batch, which it computes only in training mode,
    with BatchNorm's statistics left untouched; the model is back in eval mode after."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        losses: dict[str, Tensor] = model(images, targets)
    finally:
        model.eval()
    return torch.stack(list(losses.values())).sum()


def _pixel_boxes(found: Target) -> list[tuple[int, float, float, float, float, float]]:
    """torchvision's boxes (xyxy, labels 1..K, scores when predicted) as ``ImageBoxes`` rows."""
    boxes = found["boxes"].float().cpu().tolist()
    labels = found["labels"].cpu().tolist()
    scores = found["scores"].float().cpu().tolist() if "scores" in found else [1.0] * len(labels)
    return [
        (label - 1, x0, y0, x1 - x0, y1 - y0, score)
        for (x0, y0, x1, y1), label, score in zip(boxes, labels, scores, strict=True)
    ]

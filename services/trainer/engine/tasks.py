"""The task seam: what differs between training a classifier and training a detector.

A run's ``Task`` is chosen from its model (``task_for``): the model and its loss, the dataset an
image list becomes, the loss of one batch and the validation pass. The epoch loop, sessions,
checkpoints, stop and resume are the same for both and ask the task, never the task's name.
Imports torch, ``contracts.training``, ``services.vision`` and the engine's own modules only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from contracts.training import Hyperparameters
from services.trainer.engine.api import Sample
from services.trainer.engine.data import SampleDataset, build_transform
from services.trainer.engine.optim import class_weights
from services.vision.detectors import is_detector
from services.vision.models import build_model

#: What a loader yields: (inputs, targets), a batch tensor and its labels for a classifier.
Batch = tuple[Any, Any]
Collate = Callable[[list[Any]], Batch]


@dataclass(frozen=True)
class Validation:
    """An epoch's validation figures: a classifier's accuracy, or a detector's mAP."""

    loss: float
    accuracy: float
    map: float | None = None
    map50: float | None = None


class Task(Protocol):
    name: str

    def check(self, classes: Sequence[str], samples: Sequence[Sample]) -> None:
        """ValueError when the classes or the samples cannot train this task."""

    def build(
        self, h: Hyperparameters, classes: int, pretrained: Path | None, *,
        like: Mapping[str, Any] | None = None,
    ) -> nn.Module:  # fmt: skip
        """The untrained model; ``like``: the state dict it is about to load (a resumed
        checkpoint's), whose layers it takes where the model's have changed since."""

    def dataset(
        self, samples: Sequence[Sample], h: Hyperparameters, *, train: bool
    ) -> Dataset[Any]:
        """Decodes one sample per key (index, augmentation seed)."""

    @property
    def collate(self) -> Collate | None:
        """Puts a batch together; None: the default, stacking into one tensor."""

    @property
    def distributed(self) -> bool:
        """Whether a run of it may train on several devices at once (DistributedDataParallel)."""

    def prepare(
        self, h: Hyperparameters, train: Sequence[Sample], classes: int, device: torch.device
    ) -> None:
        """Whatever the task derives from the training set (a classifier's class weights)."""

    def to_device(self, batch: Batch, device: torch.device, channels_last: bool) -> Batch: ...

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The batch's mean loss to minimise, and its named components (may be empty)."""

    def validate(
        self, model: nn.Module, batches: Any, amp: Callable[[], Any], device: torch.device
    ) -> Validation:
        """The validation figures over ``batches`` (already polled for stops), in eval mode."""


class Classification:
    """A classifier: cross-entropy (class-weighted on request) and accuracy."""

    name = "classification"
    collate: Collate | None = None
    distributed = True

    def __init__(self) -> None:
        self.criterion: nn.Module = nn.CrossEntropyLoss()

    def check(self, classes: Sequence[str], samples: Sequence[Sample]) -> None:
        if len(classes) < 2:
            raise ValueError(f"a classifier needs at least two classes, not {len(classes)}")
        for sample in samples:
            if not 0 <= sample.label < len(classes):
                raise ValueError(f"label {sample.label} of {sample.path} is not a class index")

    def build(
        self, h: Hyperparameters, classes: int, pretrained: Path | None, *,
        like: Mapping[str, Any] | None = None,
    ) -> nn.Module:  # fmt: skip
        return build_model(h.model, classes, pretrained)

    def dataset(
        self, samples: Sequence[Sample], h: Hyperparameters, *, train: bool
    ) -> Dataset[Any]:
        transform = build_transform(h.augmentation, h.image_size, train=train)
        return SampleDataset(samples, transform, h.image_size)

    def prepare(
        self, h: Hyperparameters, train: Sequence[Sample], classes: int, device: torch.device
    ) -> None:
        if h.class_weights == "auto":
            weights = class_weights([s.label for s in train], classes).to(device)
            self.criterion = nn.CrossEntropyLoss(weight=weights)

    def to_device(self, batch: Batch, device: torch.device, channels_last: bool) -> Batch:
        # Non-blocking copies from pinned memory overlap the transfer with queued GPU work.
        images, labels = batch
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        images = images.to(device, non_blocking=True, memory_format=fmt)
        return images, labels.to(device, non_blocking=True)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        images, labels = batch
        return self.criterion(model(images), labels), {}

    def validate(
        self, model: nn.Module, batches: Any, amp: Callable[[], Any], device: torch.device
    ) -> Validation:
        # Unweighted: the loss measures the model, comparable whatever the class weights.
        loss = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for images, labels in batches:
            with amp():
                logits = model(images).float()
            loss += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += len(labels)
        return Validation(loss.item() / max(seen, 1), correct.item() / max(seen, 1))


def task_for(model: str) -> Task:
    """The task a run of ``model`` trains: a detector's or a classifier's."""
    if is_detector(model):
        from services.trainer.engine.detection import Detection

        return Detection()
    return Classification()

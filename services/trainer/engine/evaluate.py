"""``evaluate``: a trained checkpoint run over labelled images, scored by ``metrics.report``
for a classifier and by COCO's metrics (``evaluate_detection``) for a detector.

A classifier's images go through ``load_image`` and ``eval_transform``, the preprocessing
validation, export and prediction use, so the accuracy here is the one training recorded for
the same images. Which branch runs is read from the checkpoint's model, never from the caller.
Imports torch, ``services.vision`` and the engine's own modules only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from services.trainer.engine.api import CheckpointError
from services.trainer.engine.checkpoints import read_checkpoint
from services.trainer.engine.evaluate_detection import evaluate_detector
from services.trainer.engine.metrics import Prediction, report
from services.vision.detectors import build_detector, is_detector
from services.vision.models import build_model
from services.vision.preprocess import eval_transform, load_image

#: (image_id, path, true class index)
LabelledImage = tuple[str, Path, int]
#: (image_id, path, class index, its true boxes): what a detector is evaluated on.
BoxedImage = tuple[str, Path, int, Sequence[tuple[int, float, float, float, float]]]


class EvaluationStopped(Exception):
    """``should_stop`` was true at a batch boundary: there is no partial report."""


def evaluate(
    checkpoint: Path, samples: Sequence[LabelledImage | BoxedImage], device: str = "cpu",
    batch_size: int = 64, should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:  # fmt: skip
    """``metrics.report`` of the checkpoint's model on ``samples`` (a detector: COCO's figures
    and the worst images, see ``evaluate_detection``), with the checkpoint's epoch and classes.
    ValueError for a missing, corrupt or unloadable checkpoint or a bad label;
    EvaluationStopped when ``should_stop`` turns true (polled before every batch)."""
    model, classes, size, epoch = _load(checkpoint)
    if isinstance(model, _Detector):
        return _evaluate_detector(model, classes, epoch, samples, device, batch_size, should_stop)
    for image_id, _, label, *_ in samples:
        if not 0 <= label < len(classes):
            raise ValueError(f"label {label} of {image_id!r} is not one of {len(classes)} classes")
    dev = torch.device(device)
    model.to(dev).eval()
    # In-process decoding, one batch at a time: memory stays flat whatever the number of images.
    labelled = [(image_id, path, label) for image_id, path, label, *_ in samples]
    loader = DataLoader(_Images(labelled, size), batch_size=batch_size, num_workers=0)
    predictions: list[Prediction] = []
    with torch.inference_mode():
        for batch, (ids, images, labels) in enumerate(loader):
            if should_stop():
                raise EvaluationStopped(f"stopped before batch {batch + 1} of {len(loader)}")
            probabilities = torch.softmax(model(images.to(dev)).float(), dim=1).cpu().tolist()
            predictions += [
                Prediction(i, int(t), tuple(p))
                for i, t, p in zip(ids, labels.tolist(), probabilities, strict=True)
            ]
    # Every image's outcome, compact, so any cell of the confusion matrix can be listed.
    per_image = [[p.image_id, p.true, p.predicted, round(p.confidence, 6)] for p in predictions]
    return {
        **report(predictions, classes),
        "checkpoint_epoch": epoch,
        "classes": classes,
        "predictions": per_image,
    }


def _evaluate_detector(
    detector: _Detector, classes: list[str], epoch: int,
    samples: Sequence[LabelledImage | BoxedImage], device: str, batch_size: int,
    should_stop: Callable[[], bool],
) -> dict[str, Any]:  # fmt: skip
    def poll(batch: int, batches: int) -> None:
        if should_stop():
            raise EvaluationStopped(f"stopped before batch {batch + 1} of {batches}")

    # An image listed without boxes is a negative: nothing to find, anything found is wrong.
    boxed: list[BoxedImage] = [(s[0], s[1], s[2], s[3] if len(s) == 4 else ()) for s in samples]
    found = evaluate_detector(
        detector.module, classes, detector.size, boxed, device, batch_size, poll
    )
    return {**found, "checkpoint_epoch": epoch, "classes": classes, "predictions": []}


@dataclass(frozen=True)
class _Detector:
    """A detector and its input size: what ``_load`` gives for a detector's checkpoint (its
    model's name says which), so a classifier's path never sees one."""

    module: nn.Module
    size: int


def _load(path: Path) -> tuple[nn.Module | _Detector, list[str], int, int]:
    """(model with the checkpoint's weights, classes, input size, epoch)."""
    try:
        state = read_checkpoint(path)
        classes = [str(c) for c in state["classes"]]
        name, size = state["model_name"], int(state["hyperparameters"]["image_size"])
        if is_detector(name):
            detector = build_detector(name, len(classes), size, like=state["model"])
            detector.load_state_dict(state["model"])
            return _Detector(detector, size), classes, size, int(state["epoch"])
        model = build_model(name, len(classes))
        model.load_state_dict(state["model"])
        return model, classes, size, int(state["epoch"])
    # A checkpoint that reads but does not fit its own model is as unusable as a corrupt one.
    except (CheckpointError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot evaluate {path}: {exc}") from exc


class _Images(Dataset[tuple[str, Tensor, int]]):
    """Decodes one labelled image per index; holds no decoded image."""

    def __init__(self, samples: Sequence[LabelledImage], size: int) -> None:
        self.samples, self.size, self.transform = list(samples), size, eval_transform(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, Tensor, int]:
        image_id, path, label = self.samples[index]
        return image_id, self.transform(load_image(path, self.size)), label

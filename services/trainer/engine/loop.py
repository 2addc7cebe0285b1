"""One epoch: the training pass over its batches and the validation pass.

Both passes poll ``should_stop`` before every batch and raise ``StopRequested`` when it is true,
so a stop never waits for more than one batch. Imports torch and the engine's own modules only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from services.trainer.engine.api import Callbacks
from services.trainer.engine.optim import Schedule

Loader = DataLoader[tuple[Tensor, int]]


class StopRequested(Exception):
    """``should_stop`` was true at a batch boundary: the epoch is abandoned, not saved."""


@dataclass(frozen=True)
class Precision:
    """Where a pass computes, and in which precision: ``amp`` the autocast dtype, or None."""

    device: torch.device
    amp: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        # Non-blocking copies from pinned memory overlap the transfer with queued GPU work.
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        images = images.to(self.device, non_blocking=True, memory_format=fmt)
        return images, labels.to(self.device, non_blocking=True)


@dataclass
class Trainee:
    """What a pass works on: the model with its optimizer, schedule, loss and precision."""

    model: nn.Module
    optimizer: Optimizer
    schedule: Schedule | None
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    precision: Precision
    #: Per batch (0-based), the factor its loss is scaled by before the backward pass: a rank's
    #: share of a global batch weighed by its size (``world.loss_weight``); empty means 1.0.
    batch_weights: list[float] = field(default_factory=list)


def train_pass(t: Trainee, loader: Loader, epoch: int, callbacks: Callbacks) -> tuple[float, float]:
    """(mean training loss, learning rate of the last step)."""
    t.model.train()
    batches, total, seen, lr = len(loader), 0.0, 0, t.optimizer.param_groups[0]["lr"]
    pending: tuple[int, Tensor, int] | None = None
    for batch, (images, labels) in _polled(loader, callbacks):
        lr = t.optimizer.param_groups[0]["lr"]
        loss = _step(t, *t.precision.to_device(images, labels), _weight(t, batch))
        if pending is not None:
            total += _report(pending, epoch, batches, callbacks)
        pending = (batch, loss, len(labels))
        seen += len(labels)
    if pending is not None:
        total += _report(pending, epoch, batches, callbacks)
    return total / max(seen, 1), lr


def _weight(t: Trainee, batch: int) -> float:
    return t.batch_weights[batch - 1] if batch <= len(t.batch_weights) else 1.0


def _step(t: Trainee, images: Tensor, labels: Tensor, weight: float = 1.0) -> Tensor:
    with t.precision.autocast():
        loss = t.criterion(t.model(images), labels)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    if t.schedule is not None:
        t.schedule.after_batch()
    return loss.detach()


def _report(
    pending: tuple[int, Tensor, int], epoch: int, batches: int, callbacks: Callbacks
) -> float:
    # Read one batch late: on CUDA the next batch is already queued when .item() waits.
    batch, loss, size = pending
    value = float(loss.item())
    callbacks.on_batch(epoch, batch, batches, value)
    return value * size


def validate_pass(t: Trainee, loader: Loader, callbacks: Callbacks) -> tuple[float, float]:
    """(mean validation loss, accuracy). The loss is unweighted: it measures
    the model, comparable across runs whatever their class weights."""
    t.model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=t.precision.device)
    correct = torch.zeros((), dtype=torch.int64, device=t.precision.device)
    seen = 0
    with torch.inference_mode():
        for _, (images, labels) in _polled(loader, callbacks):
            images, labels = t.precision.to_device(images, labels)
            with t.precision.autocast():
                logits = t.model(images).float()
            loss += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += len(labels)
    return loss.item() / max(seen, 1), correct.item() / max(seen, 1)


def _polled(loader: Loader, callbacks: Callbacks) -> Iterator[tuple[int, tuple[Tensor, Tensor]]]:
    """The loader's batches, numbered from 1, polling ``should_stop`` before each."""
    iterator = iter(loader)
    for batch in range(1, len(loader) + 1):
        if callbacks.should_stop():
            raise StopRequested
        yield batch, next(iterator)

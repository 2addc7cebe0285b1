"""One epoch: the training pass over its batches and the validation pass.

Both passes poll ``should_stop`` before every batch and raise ``StopRequested`` when it is true,
so a stop never waits for more than one batch. Imports torch and the engine's own modules only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from services.trainer.engine.api import Callbacks
from services.trainer.engine.optim import Schedule
from services.trainer.engine.tasks import Batch, Task, Validation

Loader = DataLoader[Batch]


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


@dataclass
class Trainee:
    """What a pass works on: the model with its optimizer, schedule, task and precision."""

    model: nn.Module
    optimizer: Optimizer
    schedule: Schedule | None
    scaler: torch.amp.GradScaler
    #: What the loss of a batch and the validation are (a classifier's or a detector's).
    task: Task
    precision: Precision
    #: Per batch (0-based), the factor its loss is scaled by before the backward pass: a rank's
    #: share of a global batch weighed by its size (``world.loss_weight``); empty means 1.0.
    batch_weights: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Trained:
    """A training pass's figures: means over its images, and the last step's learning rate."""

    loss: float
    learning_rate: float
    #: The task's loss components (a detector's), each a mean over the images.
    components: dict[str, float] = field(default_factory=dict)


def train_pass(t: Trainee, loader: Loader, epoch: int, callbacks: Callbacks) -> Trained:
    t.model.train()
    batches, total, seen, lr = len(loader), 0.0, 0, t.optimizer.param_groups[0]["lr"]
    sums: dict[str, Tensor] = {}
    pending: tuple[int, Tensor, int] | None = None
    for batch, raw in _polled(loader, callbacks):
        lr = t.optimizer.param_groups[0]["lr"]
        size = len(raw[1])
        loss, components = _step(t, _moved(t, raw), _weight(t, batch))
        for name, value in components.items():  # summed on the device: no wait per batch
            sums[name] = sums.get(name, 0.0) + value.detach().float() * size
        if pending is not None:
            total += _report(pending, epoch, batches, callbacks)
        pending = (batch, loss, size)
        seen += size
    if pending is not None:
        total += _report(pending, epoch, batches, callbacks)
    means = {name: float(value.item()) / max(seen, 1) for name, value in sums.items()}
    return Trained(total / max(seen, 1), lr, means)


def _moved(t: Trainee, batch: Batch) -> Batch:
    device = t.precision.device
    return t.task.to_device(batch, device, channels_last=device.type == "cuda")


def _weight(t: Trainee, batch: int) -> float:
    return t.batch_weights[batch - 1] if batch <= len(t.batch_weights) else 1.0


def _step(t: Trainee, batch: Batch, weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    with t.precision.autocast():
        loss, components = t.task.loss(t.model, batch)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    if t.schedule is not None:
        t.schedule.after_batch()
    return loss.detach(), components


def _report(
    pending: tuple[int, Tensor, int], epoch: int, batches: int, callbacks: Callbacks
) -> float:
    # Read one batch late: on CUDA the next batch is already queued when .item() waits.
    batch, loss, size = pending
    value = float(loss.item())
    callbacks.on_batch(epoch, batch, batches, value)
    return value * size


def validate_pass(t: Trainee, loader: Loader, callbacks: Callbacks) -> Validation:
    """The task's validation figures over ``loader`` (stops polled at every batch)."""
    t.model.eval()
    batches = (_moved(t, batch) for _, batch in _polled(loader, callbacks))
    with torch.inference_mode():
        return t.task.validate(t.model, batches, t.precision.autocast, t.precision.device)


def _polled(loader: Loader, callbacks: Callbacks) -> Iterator[tuple[int, Batch]]:
    """The loader's batches, numbered from 1, polling ``should_stop`` before each."""
    iterator = iter(loader)
    for batch in range(1, len(loader) + 1):
        if callbacks.should_stop():
            raise StopRequested
        yield batch, next(iterator)

"""Optimizer, learning-rate schedule, loss weights and mixed precision for a run.

A schedule is always planned from scratch for the run's current number of epochs and then
fast-forwarded over the steps already taken: a resume with more epochs re-plans the rest, and a
resume with the same epochs replays the same float operations, so its rates match bit for bit.
Imports torch and ``contracts.training`` only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, OneCycleLR, StepLR

from contracts.training import Hyperparameters

SGD_MOMENTUM = 0.9
STEP_GAMMA = 0.1
# Keys a scheduler writes into the optimizer's groups; cleared so a new plan starts clean.
_SCHEDULER_KEYS = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")


def build_optimizer(h: Hyperparameters, model: nn.Module) -> Optimizer:
    params, lr, decay = model.parameters(), h.learning_rate, h.weight_decay
    if h.optimizer == "sgd":
        return SGD(params, lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=decay)
    return AdamW(params, lr=lr, weight_decay=decay)


@dataclass
class Schedule:
    """A scheduler and when it steps: after each batch (onecycle) or after each epoch."""

    scheduler: LRScheduler
    per_batch: bool

    def after_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if not self.per_batch:
            self.scheduler.step()


def plan_schedule(
    optimizer: Optimizer, h: Hyperparameters, steps_per_epoch: int, epochs_done: int
) -> Schedule:
    """The schedule for ``h.epochs``, advanced to the end of epoch ``epochs_done``."""
    for group in optimizer.param_groups:
        group["lr"] = h.learning_rate
        for key in _SCHEDULER_KEYS:
            group.pop(key, None)
    schedule = Schedule(_scheduler(optimizer, h, steps_per_epoch), h.schedule == "onecycle")
    steps = epochs_done * (steps_per_epoch if schedule.per_batch else 1)
    if schedule.per_batch and steps > 0:
        # OneCycleLR is closed-form in its step count: jump there, not through every batch.
        schedule.scheduler.last_epoch = steps - 1
        steps = 1
    with warnings.catch_warnings():
        # Stepping a scheduler before its optimizer warns; here that is the point.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            schedule.scheduler.step()
    return schedule


def _scheduler(optimizer: Optimizer, h: Hyperparameters, steps_per_epoch: int) -> LRScheduler:
    if h.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=h.epochs)
    if h.schedule == "step":
        return StepLR(optimizer, step_size=max(1, h.epochs // 3), gamma=STEP_GAMMA)
    if h.schedule == "onecycle":
        total = h.epochs * steps_per_epoch
        return OneCycleLR(optimizer, max_lr=h.learning_rate, total_steps=total)
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def class_weights(labels: Sequence[int], num_classes: int) -> Tensor:
    """Inverse label frequency, normalised to mean 1; an absent class counts as one image."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes)
    weights = 1.0 / counts.double().clamp(min=1)
    return (weights / weights.mean()).float()


def amp_dtype(mixed_precision: str, device: str) -> torch.dtype | None:
    """The autocast type, or None for full precision: AMP runs on CUDA only."""
    if mixed_precision == "off" or not device.startswith("cuda"):
        return None
    # bfloat16 keeps float32's range: no loss scaling, no overflow to skip steps for.
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

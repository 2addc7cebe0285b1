"""A run's moving parts: built from the hyperparameters, saved to and restored from a checkpoint.

On several ranks (``world``) the model is wrapped for DistributedDataParallel and each rank
loads its share of the images; a checkpoint always holds the unwrapped model's state, so a file
written by a run on two devices resumes on one and the other way round.
Imports torch, msgspec, ``contracts.training`` and the engine's own modules only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import torch

from contracts.training import Hyperparameters
from services.trainer.engine.api import CheckpointError, EpochMetrics, Outcome, Sample
from services.trainer.engine.checkpoints import FORMAT, read_checkpoint
from services.trainer.engine.data import EpochSampler, make_loader
from services.trainer.engine.loop import Loader, Precision, Trainee
from services.trainer.engine.optim import amp_dtype, build_optimizer
from services.trainer.engine.seeding import rng_state, set_rng_state
from services.trainer.engine.tasks import Task, task_for
from services.trainer.engine.world import (
    SOLO,
    ShardSampler,
    Strided,
    World,
    local_batch,
    loss_weight,
    unwrap,
    wrap,
)


@dataclass
class Progress:
    """Where a run stands: its last finished epoch, its best one, and every epoch's metrics."""

    epoch: int = 0
    best_epoch: int = 0
    #: The best epoch's score (``EpochMetrics.score``: a detector's mAP, a classifier's
    #: accuracy); a checkpoint keeps it as ``best_val_accuracy``.
    best_accuracy: float = 0.0
    history: list[EpochMetrics] = field(default_factory=list)

    def record(self, metrics: EpochMetrics) -> bool:
        """Adds an epoch; True when it is the new best (a tie keeps the earlier epoch)."""
        self.epoch = metrics.epoch
        self.history.append(metrics)
        improved = self.best_epoch == 0 or metrics.score > self.best_accuracy
        if improved:
            self.best_epoch, self.best_accuracy = metrics.epoch, metrics.score
        return improved

    def patience_exhausted(self, patience: int) -> bool:
        return patience > 0 and self.epoch - self.best_epoch >= patience

    def outcome(self, status: str) -> Outcome:
        best = next((m for m in self.history if m.epoch == self.best_epoch), None)
        if best is None or best.val_map is None:
            return Outcome(status, self.epoch, self.best_epoch, self.best_accuracy)
        return Outcome(status, self.epoch, self.best_epoch, 0.0, best_val_map=best.val_map)


@dataclass
class Session:
    h: Hyperparameters
    classes: list[str]
    trainee: Trainee
    sampler: EpochSampler
    train_loader: Loader
    val_loader: Loader
    world: World = SOLO


def open_session(
    h: Hyperparameters, classes: list[str], train: Sequence[Sample], val: Sequence[Sample],
    device: str, *, pretrained: Path | None, world: World = SOLO,
    like: Mapping[str, Any] | None = None,
) -> Session:  # fmt: skip
    """``like``: the state dict the model will load (see ``Task.build``)."""
    dev = torch.device(device)
    task = task_for(h.model)
    task.prepare(h, train, len(classes), dev)
    model = task.build(h, len(classes), pretrained, like=like).to(dev)
    if dev.type == "cuda":
        # channels_last lets cuDNN use its tensor-core convolutions without transposes.
        model = model.to(memory_format=torch.channels_last)
    model = wrap(model, dev, world)
    amp = amp_dtype(h.mixed_precision, device)
    trainee = Trainee(
        model=model,
        optimizer=build_optimizer(h, model),
        schedule=None,
        scaler=torch.amp.GradScaler(dev.type, enabled=amp is torch.float16),
        task=task,
        precision=Precision(dev, amp),
    )
    sampler = EpochSampler(len(train), h.seed, shuffle=True)
    if world.distributed:
        train_loader, val_loader = _shared_loaders(h, task, train, val, sampler, device, world)
        trainee.batch_weights = loss_weight(train_loader.sampler, world)  # type: ignore[arg-type]
    else:
        train_loader, val_loader = _loaders(h, task, train, val, sampler, device)
    return Session(h, list(classes), trainee, sampler, train_loader, val_loader, world)


def _shared_loaders(
    h: Hyperparameters, task: Task, train: Sequence[Sample], val: Sequence[Sample],
    sampler: EpochSampler, device: str, world: World,
) -> tuple[Loader, Loader]:  # fmt: skip
    """This rank's loaders: its share of every global batch, every ``size``-th val image."""
    train_set, val_set = task.dataset(train, h, train=True), task.dataset(val, h, train=False)
    val_keys = Strided(EpochSampler(len(val), h.seed, shuffle=False), world)
    shard, batch = ShardSampler(sampler, world, h.batch_size), local_batch(h.batch_size, world)
    collate = task.collate
    return (
        make_loader(train_set, h, shard, device, batch_size=batch, collate=collate),
        make_loader(val_set, h, val_keys, device, batch_size=batch, collate=collate),
    )


def _loaders(
    h: Hyperparameters, task: Task, train: Sequence[Sample], val: Sequence[Sample],
    sampler: EpochSampler, device: str,
) -> tuple[Loader, Loader]:  # fmt: skip
    train_set, val_set = task.dataset(train, h, train=True), task.dataset(val, h, train=False)
    # A last batch of one image breaks BatchNorm where features are 1x1; drop just that one.
    drop_last = len(train) % h.batch_size == 1
    val_sampler = EpochSampler(len(val), h.seed, shuffle=False)
    collate = task.collate
    return (
        make_loader(train_set, h, sampler, device, drop_last=drop_last, collate=collate),
        make_loader(val_set, h, val_sampler, device, collate=collate),
    )


def snapshot(s: Session, progress: Progress) -> dict[str, Any]:
    """Everything a resume needs, and what a reader of the file wants to know about the run."""
    t = s.trainee
    return {
        "format": FORMAT,
        # What the model is, for a reader of the file (the evaluator, the exporter).
        "task": t.task.name,
        "model_name": s.h.model,
        "model": unwrap(t.model).state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.schedule.scheduler.state_dict() if t.schedule else None,
        "scaler": t.scaler.state_dict(),
        "rng": rng_state(),
        "epoch": progress.epoch,
        "best_epoch": progress.best_epoch,
        "best_val_accuracy": progress.best_accuracy,
        "history": [asdict(m) for m in progress.history],
        "hyperparameters": msgspec.to_builtins(s.h),
        "classes": s.classes,
    }


def restore(s: Session, path: Path, state: dict[str, Any] | None = None) -> Progress:
    """Loads ``path`` (``state``, when already read) into the session. The schedule is not
    loaded: it is re-planned from the epoch (see ``optim.plan_schedule``), which also covers
    a change in the number of epochs."""
    state = read_checkpoint(path) if state is None else state
    if state["model_name"] != s.h.model or list(state["classes"]) != s.classes:
        raise CheckpointError(
            f"{path} was trained as {state['model_name']} on {state['classes']}, "
            f"not {s.h.model} on {s.classes}"
        )
    t = s.trainee
    try:
        unwrap(t.model).load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        if t.scaler.is_enabled() and state["scaler"]:
            t.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} does not fit this run: {exc}") from exc
    history = [EpochMetrics(**m) for m in state["history"]]
    return Progress(state["epoch"], state["best_epoch"], state["best_val_accuracy"], history)

"""``train``: the epoch loop of one run, from scratch or resumed from a checkpoint file.

Called from a worker thread of the trainer service; blocks until the run completes, stops early
or is stopped. Several devices run it once per rank (``ddp``): the ranks' sums are added up, so
every rank sees the same epoch metrics, and only rank 0 writes checkpoints and calls back.
Imports torch, ``contracts.training`` and the engine's own modules only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import msgspec

from contracts.training import Hyperparameters
from services.trainer.engine.api import (
    COMPLETED,
    EARLY_STOPPED,
    STOPPED,
    Callbacks,
    EpochMetrics,
    Outcome,
    Sample,
)
from services.trainer.engine.checkpoints import read_checkpoint, write_checkpoints
from services.trainer.engine.devices import peak_memory, reset_peak_memory
from services.trainer.engine.faults import fault_point
from services.trainer.engine.loop import Loader, StopRequested, train_pass, validate_pass
from services.trainer.engine.measure import measure
from services.trainer.engine.optim import plan_schedule
from services.trainer.engine.seeding import configure_determinism, derive_seed, seed_all
from services.trainer.engine.session import Progress, Session, open_session, restore, snapshot
from services.trainer.engine.tasks import task_for
from services.trainer.engine.validation import validate
from services.trainer.engine.world import SOLO, World, all_sum, unwrap
from services.vision.models import pretrained_path


def train(
    h: Hyperparameters, classes: list[str], train: Sequence[Sample], val: Sequence[Sample],
    workdir: Path, device: str, callbacks: Callbacks, *, resume: Path | None = None,
    world: World = SOLO,
) -> Outcome:  # fmt: skip
    """Trains up to ``h.epochs``, writing a new checkpoint file to ``workdir`` after every
    epoch (see ``checkpoints``); ``resume`` continues after the epoch of that checkpoint.
    ``world``: this process's rank when ``ddp`` runs one per device."""
    task = task_for(h.model)
    _check(h, classes, train, val, resume=resume is not None)
    task.check(classes, [*train, *val])
    if world.distributed and not task.distributed:
        raise ValueError(f"{h.model} trains on one device; this run asked for {world.size}")
    configure_determinism()
    workdir.mkdir(parents=True, exist_ok=True)
    seed_all(derive_seed("init", h.seed))
    pretrained = pretrained_path(h.model, h.pretrained) if h.pretrained and not resume else None
    state = read_checkpoint(resume) if resume is not None else None
    like = state["model"] if state is not None else None
    session = open_session(
        h, classes, train, val, device, pretrained=pretrained, world=world, like=like
    )
    progress = restore(session, resume, state) if resume is not None else Progress()
    if progress.epoch >= h.epochs:
        return _measured(session, progress.outcome(COMPLETED))
    t = session.trainee
    t.schedule = plan_schedule(t.optimizer, h, len(session.train_loader), progress.epoch)
    try:
        for epoch in range(progress.epoch + 1, h.epochs + 1):
            metrics = _epoch(session, epoch, callbacks)
            fault_point("after_train_pass", epoch)
            improved = progress.record(metrics)
            if world.main:
                checkpoints = write_checkpoints(snapshot(session, progress), workdir, best=improved)
                fault_point("after_checkpoint_write", epoch)
                callbacks.on_epoch(metrics, checkpoints)
            if progress.patience_exhausted(h.early_stopping_patience):
                return _measured(session, progress.outcome(EARLY_STOPPED))
    except StopRequested:
        return progress.outcome(STOPPED)
    return _measured(session, progress.outcome(COMPLETED))


def _measured(s: Session, outcome: Outcome) -> Outcome:
    """A finished run's outcome with what its model costs (a search's objectives); rank 0's
    alone on several devices (the others' outcomes are not reported)."""
    if not s.world.main:
        return outcome
    found = measure(unwrap(s.trainee.model), s.h.image_size, s.trainee.precision)
    return replace(outcome, params=found.params, latency_ms=found.latency_ms)


def _epoch(s: Session, epoch: int, callbacks: Callbacks) -> EpochMetrics:
    # Everything random in the epoch starts from (seed, epoch), never from the epochs before.
    rank = () if s.world.main else (s.world.rank,)  # rank 0 draws what one process would
    seed_all(derive_seed("epoch", s.h.seed, epoch, *rank))
    s.sampler.set_epoch(epoch)
    device = str(s.trainee.precision.device)
    reset_peak_memory(device)
    start = time.perf_counter()
    trained = train_pass(s.trainee, s.train_loader, epoch, callbacks)
    train_loss, lr = trained.loss, trained.learning_rate
    train_seconds = time.perf_counter() - start
    # Validation uses the bare model: the DDP wrapper would exchange buffers at every batch.
    bare = dataclasses.replace(s.trainee, model=unwrap(s.trainee.model))
    found = validate_pass(bare, s.val_loader, callbacks)
    val_loss, accuracy = found.loss, found.accuracy
    if s.world.distributed:
        train_loss, val_loss, accuracy = _across_ranks(s, train_loss, val_loss, accuracy)
    if s.trainee.schedule is not None:
        s.trainee.schedule.after_epoch()
    images = min(len(s.sampler), len(s.train_loader) * s.h.batch_size)
    return EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=val_loss,
        val_accuracy=accuracy,
        learning_rate=lr,
        seconds=time.perf_counter() - start,
        images_per_second=images / max(train_seconds, 1e-9),
        gpu_memory_peak=peak_memory(device),
        losses=trained.components,
        val_map=found.map,
        val_map50=found.map50,
    )


def _across_ranks(s: Session, train: float, val: float, accuracy: float) -> tuple[float, ...]:
    """The epoch's means over every rank's images: each rank's mean weighed by its count."""
    n_train, n_val = _seen(s.train_loader), _seen(s.val_loader)
    local = [train * n_train, n_train, val * n_val, accuracy * n_val, n_val]
    total = all_sum(local, s.trainee.precision.device, s.world)
    return total[0] / max(total[1], 1), total[2] / max(total[4], 1), total[3] / max(total[4], 1)


def _seen(loader: Loader) -> int:
    """Images a pass over ``loader`` sees (its sampler's keys; ranks never drop a batch)."""
    return len(loader.sampler)  # type: ignore[arg-type]


def _check(
    h: Hyperparameters, classes: list[str], train: Sequence[Sample], val: Sequence[Sample],
    *, resume: bool,
) -> None:  # fmt: skip
    # A resume starts from its checkpoint: the pretrained file may be gone by then.
    problems = validate(msgspec.structs.replace(h, pretrained=None) if resume else h)
    if problems:
        raise ValueError("invalid hyperparameters: " + "; ".join(f"{f}: {m}" for f, m in problems))
    if len(train) < 2 or not val:
        raise ValueError(f"need 2+ training and 1+ validation images, not {len(train)}/{len(val)}")

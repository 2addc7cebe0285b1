"""Folds the TRAINING stream (runs and evaluations) into the gateway's tables: one match arm
per event type. Imports ``contracts.training``, the kernel's projection plumbing and this
package's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Table
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import training as c
from contracts.experiments import EXPERIMENT_EVENTS
from services.gateway.readmodels.training.tables import (
    CheckpointRow,
    EpochRow,
    EvaluationRow,
    RunRow,
)
from services.kernel.eventstore import StoredEvent
from services.kernel.jobs import Lifecycle
from services.kernel.jobs.table import fold_job
from services.kernel.projection import Decodes

EVALUATION = Lifecycle(*c.EVALUATION_JOB)

#: The status a run is in after each event that changes it (streams name statuses by it too).
STATUS_OF: dict[type, str] = {
    c.RunQueued: "queued",
    c.RunResumed: "queued",
    c.RunStarted: "running",
    c.RunStopRequested: "stopping",
    c.RunStopped: "stopped",
    c.RunCompleted: "completed",
    c.RunFailed: "failed",
    c.RunInterrupted: "interrupted",
}

EPOCH_FIELDS = (
    "run_id",
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
    "images_per_second",
    "gpu_memory_peak",
    "losses",
    "val_map",
    "val_map50",
)


class TrainingProjector(Decodes):
    name = "training"
    stream = c.STREAM
    filter_subject = c.EVENTS
    event_type = c.Event
    tables: Sequence[Table] = (
        RunRow.__table__,  # type: ignore[attr-defined]
        EpochRow.__table__,  # type: ignore[attr-defined]
        CheckpointRow.__table__,  # type: ignore[attr-defined]
        EvaluationRow.__table__,  # type: ignore[attr-defined]
    )

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event, when = stored.event, stored.event.occurred_at
        if EVALUATION.owns(event):
            row_e = await fold_job(db, EvaluationRow, EVALUATION, event)
            if isinstance(event, c.EvaluationCompleted) and row_e is not None:
                row_e.metrics = event.metrics
                row_e.predictions = [list(p) for p in event.predictions]
            return
        if isinstance(event, c.RunQueued):
            db.add(_queued(event, stored.sequence))
            return
        if isinstance(event, EXPERIMENT_EVENTS):
            return  # the experiment's own events: its own projector's
        row = await db.get(RunRow, event.run_id)
        if row is None:
            return
        row.updated_at = when
        if type(event) in STATUS_OF:
            row.status = STATUS_OF[type(event)]
        match event:
            case c.RunResumed():
                # A resume the trainer made by itself says why: the interruption before it.
                why = f"resumed by itself after: {row.message}" if event.automatic else None
                row.queued_seq, row.epochs, row.message = stored.sequence, event.epochs, why
            case c.RunStarted():
                row.device, row.instance, row.attempt = event.device, event.instance, event.attempt
                row.message = None
            case c.EpochCompleted():
                await db.merge(EpochRow(**{f: getattr(event, f) for f in EPOCH_FIELDS}))
                row.epochs_done = event.epoch
                _best(row, event)
            case c.CheckpointSaved():
                fields = ("run_id", "kind", "epoch", "sha256", "size", "object_name")
                await db.merge(CheckpointRow(**{f: getattr(event, f) for f in fields}))
            case c.RunFailed():
                row.message = f"{event.code}: {event.message}"
            case c.RunInterrupted():
                row.message = event.reason
        db.add(row)


def _best(row: RunRow, event: c.EpochCompleted) -> None:
    """The run's best epoch so far: by mAP for a detector, by accuracy for a classifier (the
    trainer's choice of its best checkpoint)."""
    if event.val_map is None:
        if row.best_val_accuracy is None or event.val_accuracy > row.best_val_accuracy:
            row.best_epoch, row.best_val_accuracy = event.epoch, event.val_accuracy
    elif row.best_val_map is None or event.val_map > row.best_val_map:
        row.best_epoch, row.best_val_map = event.epoch, event.val_map
        row.best_val_accuracy = event.val_accuracy


def _queued(event: c.RunQueued, sequence: int) -> RunRow:
    return RunRow(
        run_id=event.run_id,
        experiment_id=event.experiment_id,
        project_id=event.project_id,
        split_id=event.split_id,
        status="queued",
        queued_seq=sequence,
        hyperparameters=msgspec.to_builtins(event.hyperparameters),
        classes=event.classes,
        train_images=event.train_images,
        val_images=event.val_images,
        epochs=event.hyperparameters.epochs,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        actor=event.actor,
    )

"""The gateway's read model of training: runs, their epoch history and checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Table
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import training as c
from services.gateway.readmodel import iso
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes

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
)


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    run_id: str = Field(primary_key=True)
    experiment_id: str = Field(index=True)
    project_id: str = Field(index=True)
    split_id: str
    status: str = Field(index=True)
    queued_seq: int = Field(index=True)
    hyperparameters: dict[str, Any] = Field(sa_type=JSON)
    classes: list[str] = Field(sa_type=JSON)
    train_images: int
    val_images: int
    epochs: int
    epochs_done: int = 0
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    device: str | None = None
    instance: str | None = None
    attempt: int = 0
    message: str | None = None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "experiment_id": self.experiment_id,
            "project_id": self.project_id,
            "split_id": self.split_id,
            "status": self.status,
            "hyperparameters": self.hyperparameters,
            "classes": self.classes,
            "train_images": self.train_images,
            "val_images": self.val_images,
            "epochs": self.epochs,
            "epochs_done": self.epochs_done,
            "best_epoch": self.best_epoch or None,
            "best_val_accuracy": self.best_val_accuracy,
            "device": self.device,
            "instance": self.instance,
            "attempt": self.attempt,
            "message": self.message,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class EpochRow(SQLModel, table=True):
    __tablename__ = "run_epochs"
    run_id: str = Field(primary_key=True)
    epoch: int = Field(primary_key=True)
    train_loss: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    images_per_second: float
    gpu_memory_peak: int | None = None

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"run_id"})


class EvaluationRow(SQLModel, table=True):
    __tablename__ = "evaluations"
    evaluation_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    status: str
    checkpoint: str
    subset: str
    images: int
    checkpoint_epoch: int
    metrics: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    predictions: list[Any] | None = Field(default=None, sa_type=JSON)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    started_at: datetime
    finished_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.evaluation_id,
            "run_id": self.run_id,
            "status": self.status,
            "checkpoint": self.checkpoint,
            "checkpoint_epoch": self.checkpoint_epoch,
            "subset": self.subset,
            "images": self.images,
            "metrics": self.metrics,
            "error": self.error,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
        }


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "run_checkpoints"
    run_id: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    epoch: int
    sha256: str
    size: int
    object_name: str

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"run_id"})


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
        if isinstance(event, c.EvaluationStarted | c.EvaluationCompleted | c.EvaluationFailed):
            await _evaluation(db, event, when)
            return
        if isinstance(event, c.RunQueued):
            db.add(_queued(event, stored.sequence))
            return
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
                if row.best_val_accuracy is None or event.val_accuracy > row.best_val_accuracy:
                    row.best_epoch, row.best_val_accuracy = event.epoch, event.val_accuracy
            case c.CheckpointSaved():
                fields = ("run_id", "kind", "epoch", "sha256", "size", "object_name")
                await db.merge(CheckpointRow(**{f: getattr(event, f) for f in fields}))
            case c.RunFailed():
                row.message = f"{event.code}: {event.message}"
            case c.RunInterrupted():
                row.message = event.reason
        db.add(row)


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
    )


async def _evaluation(db: AsyncSession, event: Any, when: datetime) -> None:
    if isinstance(event, c.EvaluationStarted):
        db.add(
            EvaluationRow(
                evaluation_id=event.evaluation_id,
                run_id=event.run_id,
                status="running",
                checkpoint=event.checkpoint,
                subset=event.subset,
                images=event.images,
                checkpoint_epoch=event.checkpoint_epoch,
                started_at=when,
            )
        )
        return
    row = await db.get(EvaluationRow, event.evaluation_id)
    if row is None:
        return
    row.finished_at = when
    if isinstance(event, c.EvaluationCompleted):
        row.status, row.metrics = "completed", event.metrics
        row.predictions = [list(p) for p in event.predictions]
    else:
        row.status, row.error = "failed", {"code": event.code, "message": event.message}
    db.add(row)

"""The tables of the gateway's read model of training: runs, their epoch history, checkpoints
and evaluations, each row with what clients see of it (``public``). Imports sqlmodel only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from services.gateway.readmodels.base import iso


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
    #: A detection run's best validation mAP@[.5:.95] (its best epoch's); None for a classifier.
    best_val_map: float | None = None
    device: str | None = None
    instance: str | None = None
    attempt: int = 0
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    #: Who queued it: per-user caps count queued runs by it.
    actor: str = Field(default="anonymous", index=True)

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
            "best_val_map": self.best_val_map,
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
    #: A detector's loss components and validation mAP (``EpochCompleted``'s); empty and None
    #: for a classifier.
    losses: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    val_map: float | None = None
    val_map50: float | None = None

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

"""The engine's public records: what it is given, what it reports, and what it returns.

Plain frozen dataclasses and a ``Protocol`` for the caller's callbacks; imports nothing but the
standard library, so the trainer service can type against them without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

COMPLETED = "completed"
EARLY_STOPPED = "early_stopped"
STOPPED = "stopped"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to another model or class list."""


#: One object of a detection image: (class index, x, y, w, h), normalised to [0, 1] with x, y
#: the top-left corner (``contracts.datasets.Box``'s convention, the label as its class index).
Box = tuple[int, float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One training or validation image: any Pillow format, oriented by its EXIF tag.
    A classifier reads its ``label``; a detector its ``boxes`` (none: a negative image)."""

    path: Path
    label: int
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_accuracy: float
    #: The learning rate of the epoch's last optimizer step.
    learning_rate: float
    seconds: float
    #: Training images / training seconds (validation excluded).
    images_per_second: float
    #: Peak bytes allocated on the GPU during the epoch; None off CUDA.
    gpu_memory_peak: int | None
    #: A detector's loss components, each a mean over the epoch's training images (their sum
    #: is ``train_loss``); empty for a classifier.
    losses: dict[str, float] = field(default_factory=dict)
    #: A detector's validation mAP@[.5:.95] and mAP@.5; None for a classifier.
    val_map: float | None = None
    val_map50: float | None = None

    @property
    def score(self) -> float:
        """What the best epoch is chosen by: the mAP of a detector, the accuracy of a classifier."""
        return self.val_accuracy if self.val_map is None else self.val_map


@dataclass(frozen=True)
class Checkpoint:
    kind: str  # "last" | "best" (one epoch's file may be both)
    path: Path
    sha256: str
    size: int


class Callbacks(Protocol):
    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        """Every training batch (1-based ``batch``); the caller throttles what it forwards."""

    def on_epoch(self, metrics: EpochMetrics, checkpoints: list[Checkpoint]) -> None:
        """After the epoch's checkpoint file is written and fsynced; may block. An exception
        raised here (the caller could not record the epoch) ends ``train`` with it."""

    def should_stop(self) -> bool:
        """Polled at every batch boundary, in training and in validation."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "completed" | "early_stopped" | "stopped"
    #: The last epoch whose checkpoint exists (0 if none).
    epochs_done: int
    best_epoch: int
    best_val_accuracy: float
    #: The trained model's parameters and latency at batch 1 in ms (``measure``); None for a
    #: stopped run, which is not measured.
    params: int | None = None
    #: A timing, not a result: two runs that trained alike have equal outcomes whatever the
    #: clock said.
    latency_ms: float | None = field(default=None, compare=False)
    #: A detector's best validation mAP@[.5:.95] (``best_val_accuracy`` is then 0.0).
    best_val_map: float | None = None

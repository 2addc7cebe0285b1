"""The torch training engine of the trainer service: models, data, the epoch loop, checkpoints.

Synchronous and self-contained: the service calls ``train`` from a worker thread and hears back
through ``Callbacks``. Imports torch, torchvision, Pillow, msgspec and ``contracts.training``;
never NATS, asyncio or another ``services`` package.
"""

from services.trainer.engine.api import (
    Callbacks,
    Checkpoint,
    CheckpointError,
    EpochMetrics,
    Outcome,
    Sample,
)
from services.trainer.engine.checkpoints import prune, read_checkpoint
from services.trainer.engine.ddp import train_on
from services.trainer.engine.devices import pick_device, pick_devices
from services.trainer.engine.faults import fault_point
from services.trainer.engine.training import train
from services.trainer.engine.validation import validate
from services.vision.models import build_model

__all__ = [
    "Callbacks",
    "Checkpoint",
    "CheckpointError",
    "EpochMetrics",
    "Outcome",
    "Sample",
    "build_model",
    "fault_point",
    "pick_device",
    "pick_devices",
    "prune",
    "read_checkpoint",
    "train",
    "train_on",
    "validate",
]

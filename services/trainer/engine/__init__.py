"""The torch training engine of the trainer service: models, data, the epoch loop, checkpoints.

Synchronous and self-contained: the service calls ``train`` from a worker thread and hears back
through ``Callbacks``. Imports torch, torchvision, Pillow, msgspec and ``contracts.training``;
never NATS, asyncio or another ``services`` package.

Each name below is imported from its module when it is first asked for (PEP 562): a trainer
that starts imports torch for its devices, not torchvision and the training loop, which its
first run (in its thread) or evaluation imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each name of the facade is defined.
_WHERE = {
    **dict.fromkeys(
        ("Callbacks", "Checkpoint", "CheckpointError", "EpochMetrics", "Outcome", "Sample"),
        "services.trainer.engine.api",
    ),
    "prune": "services.trainer.engine.checkpoints",
    "read_checkpoint": "services.trainer.engine.checkpoints",
    "train_on": "services.trainer.engine.ddp",
    "pick_device": "services.trainer.engine.devices",
    "pick_devices": "services.trainer.engine.devices",
    "fault_point": "services.trainer.engine.faults",
    "train": "services.trainer.engine.training",
    "validate": "services.trainer.engine.validation",
    "build_model": "services.vision.models",
}


def __getattr__(name: str) -> Any:
    """``name`` of the facade, imported from its module on first use (and kept here)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


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

"""Reading one of the trainer's ``last.pt``/``best.pt`` files back into an eval-mode model.

The format is the trainer's (a dict with ``model`` state dict, ``hyperparameters``, ``classes``,
``epoch``…), read by ``services.vision.checkpoint`` as the trainer reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from services.vision.checkpoint import read_state
from services.vision.detectors import build_detector, is_detector
from services.vision.models import build_model

_REQUIRED = ("model", "hyperparameters", "classes")


def load_checkpoint(path: Path, *, sha256: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model on the CPU in eval mode, and ``{"model", "task", "image_size", "classes",
    "epoch", "best_val_accuracy", "hyperparameters"}`` (``task``: "classification" or
    "detection", from the model's name). ValueError when the file is missing, corrupt,
    not a training checkpoint, or (given ``sha256``, as the trainer announced it) not that file.
    """
    state = read_state(path, _REQUIRED, sha256=sha256)
    h = state["hyperparameters"]
    classes = [str(c) for c in state["classes"]]
    detector = is_detector(str(h.get("model")))
    try:
        if detector:
            size = int(h["image_size"])
            model = build_detector(str(h["model"]), len(classes), size, like=state["model"])
        else:
            model = build_model(str(h["model"]), len(classes))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} does not hold its model's weights: {exc}") from exc
    bad = [k for k, v in state["model"].items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(f"checkpoint {path} is corrupt: non-finite values in {bad[0]}")
    info = {
        "model": h["model"],
        "task": "detection" if detector else "classification",
        "image_size": int(h["image_size"]),
        "classes": classes,
        "epoch": state.get("epoch"),
        "best_val_accuracy": state.get("best_val_accuracy"),
        "hyperparameters": h,
    }
    return model.eval(), info

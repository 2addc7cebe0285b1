"""Reading one of the trainer's ``last.pt``/``best.pt`` files back into an eval-mode model.

The format is the trainer's (a dict with ``model`` state dict, ``hyperparameters``, ``classes``,
``epoch``…); it is read here rather than imported, services sharing only ``services.kernel``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.exporter.engine.files import sha256_of
from services.vision.models import build_model

_REQUIRED = ("model", "hyperparameters", "classes")


def load_checkpoint(path: Path, *, sha256: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model on the CPU in eval mode, and ``{"model", "image_size", "classes", "epoch",
    "best_val_accuracy", "hyperparameters"}``. ValueError when the file is missing, corrupt,
    not a training checkpoint, or (given ``sha256``, as the trainer announced it) not that file.
    """
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    # A flipped byte inside tensor data loads silently (torch checks no CRC): only the hash
    # the trainer published catches it.
    if sha256 is not None and sha256_of(path) != sha256:
        raise ValueError(f"checkpoint {path} is corrupt: its sha256 is not {sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways inside torch
        raise ValueError(f"checkpoint {path} is unreadable: {exc}") from exc
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED):
        raise ValueError(f"{path} is not a training checkpoint")
    h = state["hyperparameters"]
    classes = [str(c) for c in state["classes"]]
    try:
        model = build_model(str(h["model"]), len(classes))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {path} does not hold its model's weights: {exc}") from exc
    bad = [k for k, v in state["model"].items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(f"checkpoint {path} is corrupt: non-finite values in {bad[0]}")
    info = {
        "model": h["model"],
        "image_size": int(h["image_size"]),
        "classes": classes,
        "epoch": state.get("epoch"),
        "best_val_accuracy": state.get("best_val_accuracy"),
        "hyperparameters": h,
    }
    return model.eval(), info

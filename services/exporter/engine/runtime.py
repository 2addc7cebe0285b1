"""onnxruntime sessions on the best provider this machine really has, and the studio's
metadata written into an ONNX file."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@cache
def providers() -> list[str]:
    """CUDA first only when onnxruntime-gpu is installed and a GPU is present: asking for CUDA
    without one makes onnxruntime log errors on every session before falling back."""
    if CUDA in ort.get_available_providers() and torch.cuda.is_available():
        return [CUDA, CPU]
    return [CPU]


def open_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=list(providers()))


def stamp(path: Path, props: dict[str, str]) -> None:
    model = onnx.load(str(path))
    kept = {p.key: p.value for p in model.metadata_props if p.key not in props}
    onnx.helper.set_model_props(model, {**kept, **props})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

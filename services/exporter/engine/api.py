"""What an export produces and the errors it raises: plain frozen values, no torch or onnx."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The ``studio_format`` an exported ONNX model carries in its metadata.
STUDIO_FORMAT = "ai-studio/1"
#: Logits agree when ``allclose(rtol, atol)`` holds elementwise.
RTOL, ATOL = 1e-3, 1e-5


@dataclass(frozen=True)
class Parity:
    """The exported model against the eager one on the same preprocessed images."""

    images: int
    max_abs_diff: float
    top1_agreement: float  # fraction of images whose argmax is the same on both sides
    torch_accuracy: float | None  # against the given labels
    onnx_accuracy: float | None  # the exported side's accuracy (TorchScript's, for that format)
    passed: bool  # allclose(RTOL, ATOL) on every logit and 100 % top-1 agreement
    #: Detectors only (``box_parity``): the smallest IoU of a matched pair of boxes and how
    #: many eager detections above the score threshold were matched; for a detector,
    #: ``max_abs_diff`` is the largest score gap and ``top1_agreement`` the fraction of images
    #: whose detections all matched.
    min_iou: float | None = None
    detections: int | None = None


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch: median of several runs after warm-up."""

    onnx_b1: float
    onnx_b32: float
    torch_b1: float
    torch_b32: float


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str  # "onnx" | "torchscript"
    size: int
    sha256: str
    parity: Parity | None
    latency: Latency | None


class BadImage(ValueError):
    """The ``index``-th image of a request cannot be decoded."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image {index} cannot be decoded: {reason}")
        self.index = index
        self.reason = reason

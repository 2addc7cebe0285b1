"""Checkpoint → a traced TorchScript file, loaded back and verified against the eager model
(a detector's is scripted instead, by ``detector_export``)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from services.exporter.engine import verify
from services.exporter.engine.api import Exported
from services.exporter.engine.checkpoint import load_checkpoint
from services.exporter.engine.detector_export import export_detector_torchscript
from services.exporter.engine.files import publish, sha256_of, temp_for

log = logging.getLogger(__name__)


def export_torchscript(
    checkpoint: Path, out: Path, images: Sequence[tuple[Path, int]], *, sha256: str | None = None
) -> Exported:
    """Writes ``out`` and returns it with its parity on ``images``; no latency figures (the
    ``Latency`` fields compare onnxruntime with torch)."""
    model, info = load_checkpoint(checkpoint, sha256=sha256)
    if info["task"] == "detection":
        return export_detector_torchscript(model, info, out, images)
    x, labels = verify.preprocess(images, info["image_size"])
    tmp = temp_for(out)
    try:
        # TorchScript is deprecated in torch but still what this format's users load.
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, torch.from_numpy(x[:2]))
            torch.jit.save(traced, str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu").eval()  # the file, not memory

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return loaded(torch.from_numpy(batch)).numpy()

        parity = verify.parity(verify.eager(model), run, x, labels)
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s to %s: %s", checkpoint, out, parity)
    return Exported(out, "torchscript", out.stat().st_size, sha256_of(out), parity, None)

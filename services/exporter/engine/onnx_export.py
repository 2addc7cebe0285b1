"""Checkpoint → one self-contained ONNX file with a dynamic batch axis and the studio's
metadata (task, classes, preprocessing), verified against the eager model with onnxruntime.
A detector's checkpoint goes to ``detector_export`` (fixed input size, boxes out)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.exporter.engine import verify
from services.exporter.engine.api import STUDIO_FORMAT, Exported
from services.exporter.engine.checkpoint import load_checkpoint
from services.exporter.engine.detector_export import export_detector_onnx
from services.exporter.engine.files import publish, sha256_of, temp_for
from services.exporter.engine.runtime import open_session, stamp
from services.vision.preprocess import metadata

log = logging.getLogger(__name__)
OPSET = 18
INPUT, OUTPUT = "image", "logits"


def export_onnx(
    checkpoint: Path, out: Path, images: Sequence[tuple[Path, int]], *, sha256: str | None = None
) -> Exported:
    """Writes ``out`` and returns it with its parity (on ``images``) and latency figures."""
    model, info = load_checkpoint(checkpoint, sha256=sha256)
    if info["task"] == "detection":
        return export_detector_onnx(model, info, out, images)
    size, classes = info["image_size"], info["classes"]
    x, labels = verify.preprocess(images, size)
    tmp = temp_for(out)
    try:
        _export(model, torch.from_numpy(x[:2]), tmp)
        stamp(tmp, {
            "preprocessing": json.dumps(metadata(size, classes)),
            "task": "classification",
            "classes": json.dumps(classes),
            "model": str(info["model"]),
            "studio_format": STUDIO_FORMAT,
        })  # fmt: skip
        run = _runner(tmp)
        parity = verify.parity(verify.eager(model), run, x, labels)
        latency = verify.latency(verify.eager(model), run, size)
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s to %s: %s, %s", checkpoint, out, parity, latency)
    return Exported(out, "onnx", out.stat().st_size, sha256_of(out), parity, latency)


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    names: dict[str, Any] = {
        "input_names": [INPUT],
        "output_names": [OUTPUT],
        "opset_version": OPSET,
    }
    try:
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(
            model, (example,), path, dynamo=True, dynamic_shapes=({0: batch},),
            external_data=False, verbose=False, **names,
        )  # fmt: skip
    except Exception as exc:  # the dynamo exporter refuses some graphs; TorchScript's may not
        log.warning("dynamo ONNX export failed (%s); falling back to dynamo=False", exc)
        torch.onnx.export(
            model, (example,), path, dynamo=False,
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, **names,
        )  # fmt: skip


def _runner(path: Path) -> verify.Runner:
    session = open_session(path)
    return lambda batch: session.run([OUTPUT], {INPUT: batch})[0]

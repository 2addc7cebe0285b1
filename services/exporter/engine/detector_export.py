"""A detector checkpoint → an ONNX file (one ``[1, 3, S, S]`` image in; ``boxes``, ``labels``,
``scores`` out) or a scripted TorchScript file, each checked box by box against the eager
detector (``box_parity``) on the run's images before it is published.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``): torchvision's detectors
are exported and tested that way upstream, with a fixed input size and batch 1. TorchScript is
``torch.jit.script`` of the detector itself, torchvision's supported path for all of
``services.vision.detectors.DETECTORS`` (tracing would freeze the number of detections); its
interface is torchvision's (a list of [0, 1] CHW tensors in; ``(losses, detections)`` out).

No latency figures for a detector: ``Latency`` compares batches of 1 and 32, and a detector
export takes one image per call (its outputs differ in length per image); a detector on the CPU
also takes seconds per 32 images, which the export would spend for a figure it cannot report.

Imports torch, onnx (via ``runtime.stamp``) and the engine's own modules.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from services.exporter.engine import detect_io
from services.exporter.engine.api import STUDIO_FORMAT, Exported, Parity
from services.exporter.engine.box_parity import BoxRunner, box_parity
from services.exporter.engine.files import publish, sha256_of, temp_for
from services.exporter.engine.runtime import open_session, stamp
from services.vision.preprocess import load_image

log = logging.getLogger(__name__)
OPSET = 18
INPUT, OUTPUTS = "image", ("boxes", "labels", "scores")
#: Parity runs one image at a time; this many of the run's images are enough to trust it.
MAX_IMAGES = 32


def detector_metadata(model: nn.Module, info: dict[str, Any]) -> dict[str, Any]:
    return detect_io.metadata(
        info["image_size"], info["classes"],
        detect_io.score_threshold(model), detect_io.max_detections(model),
    )  # fmt: skip


def inputs(images: Sequence[tuple[Path, int]], size: int) -> list[np.ndarray]:
    """Up to ``MAX_IMAGES`` of ``images`` as the export's ``[1, 3, S, S]`` inputs."""
    chosen = list(images)[:MAX_IMAGES]
    if not chosen:
        raise ValueError("parity needs at least one image")
    return [detect_io.letterbox(load_image(p, size), size)[0][None].numpy() for p, _ in chosen]


def eager(model: nn.Module) -> BoxRunner:
    wrapped = detect_io.Exportable(model).eval()

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            boxes, labels, scores = wrapped(torch.from_numpy(image))
        return boxes.numpy(), labels.numpy(), scores.numpy()

    return run


def export_detector_onnx(
    model: nn.Module, info: dict[str, Any], out: Path, images: Sequence[tuple[Path, int]]
) -> Exported:
    """Writes ``out`` from the eval-mode detector ``model`` (``info`` as ``load_checkpoint``
    gives it) once its parity holds on ``images``; the parity figures either way."""
    size = info["image_size"]
    x = inputs(images, size)
    meta = detector_metadata(model, info)
    tmp = temp_for(out)
    try:
        _export(model, torch.from_numpy(x[0]), tmp)
        stamp(tmp, {
            "preprocessing": json.dumps(meta),
            "classes": json.dumps(info["classes"]),
            "task": detect_io.TASK,
            "model": str(info["model"]),
            "studio_format": STUDIO_FORMAT,
        })  # fmt: skip
        run = onnx_runner(tmp)
        parity = check(eager(model), run, x, meta)
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported detector %s to %s: %s", info["model"], out, parity)
    return Exported(out, "onnx", out.stat().st_size, sha256_of(out), parity, None)


def export_detector_torchscript(
    model: nn.Module, info: dict[str, Any], out: Path, images: Sequence[tuple[Path, int]]
) -> Exported:
    """Writes ``out`` (the scripted detector) once its parity holds on ``images``."""
    x = inputs(images, info["image_size"])
    tmp = temp_for(out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated in torch, still loaded
            try:
                scripted = torch.jit.script(model)
            except Exception as exc:  # torch.jit.frontend errors have no common base
                raise ValueError(
                    f"{info['model']} cannot be scripted to TorchScript: {exc}"
                ) from exc
            torch.jit.save(scripted, str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu").eval()  # the file, not memory

        def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scripted detectors return (losses, detections)"
                found = loaded([torch.from_numpy(image[0])])[1][0]
            return found["boxes"].numpy(), found["labels"].numpy(), found["scores"].numpy()

        parity = check(eager(model), run, x, detector_metadata(model, info))
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported detector %s to %s: %s", info["model"], out, parity)
    return Exported(out, "torchscript", out.stat().st_size, sha256_of(out), parity, None)


def check(
    reference: BoxRunner, candidate: BoxRunner, x: list[np.ndarray], meta: dict[str, Any]
) -> Parity:
    return box_parity(
        reference, candidate, x, threshold=meta["score_threshold"], cap=meta["max_detections"]
    )


def onnx_runner(path: Path) -> BoxRunner:
    session = open_session(path)

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, labels, scores = session.run(list(OUTPUTS), {INPUT: image})
        return boxes, labels, scores

    return run


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's tracer warnings about Python ints
        torch.onnx.export(
            detect_io.Exportable(model).eval(), (example,), path, dynamo=False,
            opset_version=OPSET, input_names=[INPUT], output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "detections"} for name in OUTPUTS},
        )  # fmt: skip

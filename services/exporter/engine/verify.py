"""Checking an exported model against the eager one: parity of logits on real images, and
latency of both at batch 1 and 32. Each side is a plain ``Runner`` (batch in, logits out)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.exporter.engine.api import ATOL, RTOL, Latency, Parity
from services.vision.preprocess import eval_transform, load_image

#: NCHW float32 batch in, logits out.
Runner = Callable[[np.ndarray], np.ndarray]
MAX_IMAGES = 256
BATCH = 32
WARMUP, RUNS = 3, 10


def preprocess(images: Sequence[tuple[Path, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``MAX_IMAGES`` of ``images`` as the evaluation pipeline prepares them, and labels."""
    chosen = list(images)[:MAX_IMAGES]
    if not chosen:
        raise ValueError("parity needs at least one image")
    transform = eval_transform(size)
    batch = torch.stack([transform(load_image(path, size)) for path, _ in chosen])
    return batch.numpy(), np.array([label for _, label in chosen])


def eager(model: nn.Module) -> Runner:
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run


def parity(reference: Runner, candidate: Runner, x: np.ndarray, labels: np.ndarray) -> Parity:
    """``candidate`` against ``reference`` on ``x`` in batches of ``BATCH``."""
    chunks = range(0, len(x), BATCH)
    ref = np.concatenate([reference(x[i : i + BATCH]) for i in chunks])
    got = np.concatenate([candidate(x[i : i + BATCH]) for i in chunks])
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    has_labels = labels.size > 0 and labels.min() >= 0
    return Parity(
        images=len(x),
        max_abs_diff=float(np.abs(ref - got).max()),
        top1_agreement=agreement,
        torch_accuracy=float((ref.argmax(1) == labels).mean()) if has_labels else None,
        onnx_accuracy=float((got.argmax(1) == labels).mean()) if has_labels else None,
        passed=bool(np.allclose(got, ref, rtol=RTOL, atol=ATOL)) and agreement == 1.0,
    )


def latency(reference: Runner, candidate: Runner, size: int) -> Latency:
    """Median milliseconds per batch; random inputs cost what images do."""
    rng = np.random.default_rng(0)
    b1 = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    b32 = rng.standard_normal((32, 3, size, size), dtype=np.float32)
    return Latency(
        onnx_b1=_median_ms(candidate, b1),
        onnx_b32=_median_ms(candidate, b32),
        torch_b1=_median_ms(reference, b1),
        torch_b32=_median_ms(reference, b32),
    )


def _median_ms(run: Runner, batch: np.ndarray) -> float:
    for _ in range(WARMUP):  # first calls allocate and pick kernels
        run(batch)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000

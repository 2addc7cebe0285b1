"""What a trained model costs, measured at the end of its run: its parameters and its latency.

The objectives of a search beyond accuracy (``params``, ``latency_ms``) come from here, measured
on the model as trained, never looked up. Imports torch, the standard library and the engine's
own modules only.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from services.trainer.engine.loop import Precision

log = logging.getLogger(__name__)

#: Forward passes before timing: the first ones pay for allocation, kernel choice and caches.
WARMUP = 5
#: Timed forward passes; the median of them is the latency.
REPEATS = 30
#: A large model on a CPU stops timing after this many seconds (with at least MIN_REPEATS).
BUDGET_S = 3.0
MIN_REPEATS = 5


@dataclass(frozen=True)
class Measurement:
    #: Every parameter of the model (trainable or not), as ``sum(numel)``.
    params: int
    #: Median forward time at batch 1, in milliseconds; None when it could not be measured.
    latency_ms: float | None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latency_ms(
    model: nn.Module, image_size: int, precision: Precision, *,
    repeats: int = REPEATS, budget_s: float = BUDGET_S,
    clock: Callable[[], float] = time.perf_counter,
) -> float:  # fmt: skip
    """The median time of one forward pass of one ``image_size`` image, in ms, on the
    precision's device and in its precision (as the model validates), in eval mode without
    autograd, after ``WARMUP`` passes. The model's train/eval mode is put back after."""
    device = precision.device
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    image = torch.zeros(1, 3, image_size, image_size, device=device).to(memory_format=fmt)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), precision.autocast():
            for _ in range(WARMUP):
                model(image)
            times = _timed(lambda: model(image), device, repeats, budget_s, clock)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1000.0


def _timed(
    forward: Callable[[], object], device: torch.device, repeats: int, budget_s: float,
    clock: Callable[[], float],
) -> list[float]:  # fmt: skip
    """Seconds of each pass; a CUDA pass is waited for, or only its launch would be timed."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    sync(device)
    times: list[float] = []
    began = clock()
    while len(times) < repeats:
        start = clock()
        forward()
        sync(device)
        end = clock()
        times.append(end - start)
        if len(times) >= MIN_REPEATS and end - began > budget_s:
            break
    return times


def measure(model: nn.Module, image_size: int, precision: Precision) -> Measurement:
    """The model's parameters and latency. A latency that cannot be measured (the device out of
    memory for it) is None, logged: the run trained, and its other results stand."""
    try:
        latency: float | None = latency_ms(model, image_size, precision)
    except RuntimeError:
        log.warning("measuring the latency of the trained model failed", exc_info=True)
        latency = None
    return Measurement(count_params(model), latency)

"""The measurements of ``bench.gpu_check``: data, a plain PyTorch loop, the engine, NVML sampling.

Each function measures one thing and returns plain numbers; ``gpu_check`` orders them, keeps the
time budget and prints the table. Runs the trainer's and exporter's engines directly (no NATS,
no services). Imports torch, torchvision, Pillow, numpy, the engines and ``contracts.training``;
pynvml only when it is installed.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from contracts.training import Hyperparameters
from services.trainer.engine import EpochMetrics, Sample, train
from services.trainer.engine.loop import _moved, _step
from services.trainer.engine.session import open_session
from services.vision.models import build_model
from services.vision.preprocess import eval_transform


@dataclass(frozen=True)
class Plan:
    """What one check trains on: sizes, workers and the device."""

    device: str
    image_size: int
    batch_size: int
    epochs: int
    workers: int
    lr: float = 1e-3

    def hyper(self, model: str, **more: Any) -> Hyperparameters:
        h = Hyperparameters(
            model=model, epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.lr,
            schedule="none", image_size=self.image_size, augmentation="none",
            workers=self.workers,
        )  # fmt: skip
        return msgspec.structs.replace(h, **more)


def make_images(root: Path, count: int, size: int, classes: int = 2, seed: int = 0) -> list[Sample]:
    """``count`` JPEGs: class k draws its shapes in its own colour band over mild noise."""
    rng, samples = random.Random(seed), []
    for i in range(count):
        label = i % classes
        img = Image.effect_noise((size, size), 24).convert("RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(4, max(5, size // 3))
            hue = (80 * label + rng.randrange(60)) % 256
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(hue, 255 - hue, rng.randrange(256)))
        path = root / f"class_{label}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=90)
        samples.append(Sample(path, label))
    return samples


class PlainSet(Dataset[tuple[torch.Tensor, int]]):
    """What a plain script would write: open, convert, the engine's own eval transform."""

    def __init__(self, samples: Sequence[Sample], size: int) -> None:
        self.samples, self.transform = list(samples), eval_transform(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        with Image.open(sample.path) as img:
            return self.transform(img.convert("RGB")), sample.label


def plain_loader(samples: Sequence[Sample], plan: Plan) -> DataLoader[Any]:
    workers = plan.workers
    return DataLoader(
        PlainSet(samples, plan.image_size), batch_size=plan.batch_size, shuffle=True,
        num_workers=workers, pin_memory=plan.device.startswith("cuda"),
        drop_last=len(samples) % plan.batch_size == 1, persistent_workers=workers > 0,
        multiprocessing_context=multiprocessing.get_context("spawn") if workers else None,
    )  # fmt: skip


def plain_train(
    model_name: str, samples: Sequence[Sample], plan: Plan, *, amp: bool
) -> list[float]:
    """images/s of each epoch of a plain loop: fp32 and contiguous, or bf16 autocast with
    channels_last (the engine's CUDA settings); AdamW as the engine's default optimizer."""
    torch.manual_seed(0)
    dev = torch.device(plan.device)
    fmt = torch.channels_last if amp else torch.contiguous_format
    model = build_model(model_name, 2).to(dev).to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=1e-4)
    criterion, loader, rates = torch.nn.CrossEntropyLoss(), plain_loader(samples, plan), []
    dtype = torch.bfloat16 if amp else None
    for _ in range(plan.epochs):
        model.train()
        seen, total, start = 0, torch.zeros((), device=dev), time.perf_counter()
        for images, labels in loader:
            images = images.to(dev, non_blocking=True, memory_format=fmt)
            labels = labels.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=dtype, enabled=amp):
                loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            seen += len(labels)
        total.item()  # waits for the device, as the engine's last .item() does
        rates.append(seen / (time.perf_counter() - start))
    return rates


class Recorder:
    """Engine callbacks that keep every epoch and can stop the run after a given epoch."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.epochs: list[EpochMetrics] = []
        self.checkpoints: list[Path] = []
        self.stop_after = stop_after

    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        return None

    def on_epoch(self, metrics: EpochMetrics, checkpoints: list[Any]) -> None:
        self.epochs.append(metrics)
        self.checkpoints.append(checkpoints[0].path)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.epochs) >= self.stop_after


def engine_train(
    model: str, train_set: Sequence[Sample], val: Sequence[Sample], plan: Plan, workdir: Path
) -> list[EpochMetrics]:
    """The engine's epochs (AMP and channels_last on CUDA, as in the studio)."""
    recorder = Recorder()
    train(plan.hyper(model), ["c0", "c1"], train_set, val, workdir, plan.device, recorder)
    return recorder.epochs


@dataclass
class Resume:
    exact: bool
    max_loss_diff: float
    weights_equal: bool
    deterministic_note: str
    checkpoint: Path
    losses: list[tuple[float, float]] = field(default_factory=list)


def exact_resume(
    model: str, train_set: Sequence[Sample], val: Sequence[Sample], plan: Plan, root: Path
) -> Resume:
    """Stop after epoch 1 and resume, against an uninterrupted run; deterministic algorithms."""
    note = _deterministic(True)
    try:
        h, classes = plan.hyper(model, epochs=2), ["c0", "c1"]
        whole = Recorder()
        train(h, classes, train_set, val, root / "whole", plan.device, whole)
        first = Recorder(stop_after=1)
        train(h, classes, train_set, val, root / "parts", plan.device, first)
        second = Recorder()
        resume = first.checkpoints[-1]
        train(h, classes, train_set, val, root / "parts", plan.device, second, resume=resume)
    finally:
        _deterministic(False)
    a, b = whole.epochs[-1], second.epochs[-1]
    diff = max(abs(a.train_loss - b.train_loss), abs(a.val_loss - b.val_loss))
    same = _same_weights(whole.checkpoints[-1], second.checkpoints[-1])
    exact = a.train_loss == b.train_loss and a.val_loss == b.val_loss and same
    pairs = [(a.train_loss, b.train_loss), (a.val_loss, b.val_loss)]
    return Resume(exact, diff, same, note, whole.checkpoints[-1], pairs)


def _deterministic(on: bool) -> str:
    # warn_only: an op with no deterministic kernel warns (and the losses show it) instead of
    # ending the check; CUBLAS_WORKSPACE_CONFIG is set by gpu_check before CUDA starts.
    torch.use_deterministic_algorithms(on, warn_only=True)
    return "torch.use_deterministic_algorithms(warn_only) + cudnn.deterministic"


def _same_weights(a: Path, b: Path) -> bool:
    left = torch.load(a, map_location="cpu", weights_only=False)["model"]
    right = torch.load(b, map_location="cpu", weights_only=False)["model"]
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def loader_and_step(
    model: str, train_set: Sequence[Sample], val: Sequence[Sample], plan: Plan, steps: int
) -> tuple[float, float]:
    """(images/s of the engine's training loader alone, images/s of its training step alone on
    one batch already on the device). The loader is timed after its first batch (worker start)."""
    session = open_session(plan.hyper(model), ["c0", "c1"], train_set, val, plan.device,
                           pretrained=None)  # fmt: skip
    session.sampler.set_epoch(1)
    seen, start = 0, 0.0
    for i, batch in enumerate(session.train_loader):
        if i == 0:
            start, first = time.perf_counter(), batch
            continue
        seen += len(batch[0])
    loader_rate = seen / max(time.perf_counter() - start, 1e-9) if seen else float("nan")
    t = session.trainee
    t.model.train()
    moved = _moved(t, first)  # the engine's own move to the device (channels_last on CUDA)
    _step(t, moved)[0].item()  # warm-up: kernels picked, memory allocated
    start = time.perf_counter()
    for _ in range(steps):
        loss = _step(t, moved)[0]
    loss.item()
    step_rate = steps * len(first[0]) / (time.perf_counter() - start)
    return loader_rate, step_rate


class GpuSampler:
    """Samples GPU utilisation and used memory with NVML every 0.1 s while a phase runs."""

    def __init__(self, device: str) -> None:
        self.util: list[int] = []
        self.used: list[int] = []
        self.note = ""
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not device.startswith("cuda"):
            self.note = "no GPU"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int(device.split(":")[1]) if ":" in device else 0
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # absent module or driver: the table says so
            self.note = f"pynvml unavailable ({type(exc).__name__})"

    def __enter__(self) -> GpuSampler:
        self.util, self.used = [], []
        if self._handle is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.util.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            self.used.append(int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used))

    def summary(self) -> str:
        if not self.util:
            return self.note or "no samples"
        mean = statistics.fmean(self.util)
        return (
            f"util mean {mean:.0f} % max {max(self.util)} %, used {max(self.used) / 2**30:.1f} GiB"
        )


def peak_gib(device: str, run: Callable[[], Any]) -> tuple[Any, float | None]:
    """``run()``'s result and the GPU memory peak (GiB, torch's allocator) during it."""
    if not device.startswith("cuda"):
        return run(), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = run()
    return result, torch.cuda.max_memory_allocated(device) / 2**30

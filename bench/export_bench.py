"""Inference speed of an exported model: onnxruntime against torch eager, in one run.

    .venv/bin/python -m bench.export_bench [--models smallcnn,resnet18] [--repeats 20]

For each model it trains one short epoch with the trainer's engine (speed does not depend on
the weights), exports the checkpoint with the exporter's engine (which also checks parity on a few
images), then times both runtimes at batch 1 and 32 on the same inputs and prints the ratio.
Exits non-zero only if an export fails its parity check, never because of a speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bench.arguments import at_least, names
from contracts.training import Hyperparameters
from services.exporter.engine import export_onnx, providers
from services.trainer.engine import Sample, train
from services.vision.models import build_model
from tests import imagesets

SIZES = {"smallcnn": 64}


class _Quiet:
    def on_batch(self, *args: object) -> None: ...

    def on_epoch(self, *args: object) -> None: ...

    def should_stop(self) -> bool:
        return False


def median_ms(run: Callable[[np.ndarray], object], batch: np.ndarray, repeats: int) -> float:
    for _ in range(3):
        run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(model: str, root: Path, repeats: int) -> bool:
    size = SIZES.get(model, 224)
    images = imagesets.squares(root / model / "images", 8, size=size)
    samples = [(p, 0 if p.parent.name == "tl" else 1) for p in sorted(images.rglob("*.png"))]
    hyper = Hyperparameters(
        model=model, epochs=1, batch_size=8, image_size=size, augmentation="none"
    )
    data = [Sample(p, label) for p, label in samples]
    train(hyper, ["br", "tl"], data, data, root / model / "run", "cpu", _Quiet())
    checkpoint = root / model / "run" / "last.pt"
    exported = export_onnx(checkpoint, root / model / "model.onnx", samples)
    session = ort.InferenceSession(str(exported.path), providers=providers())
    eager = build_model(model, 2)
    eager.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    eager.eval()
    parity = exported.parity
    if parity is None:
        raise RuntimeError(f"the export of {model} reported no parity check")
    print(
        f"{model} ({size} px): parity passed={parity.passed}, "
        f"max |diff| {parity.max_abs_diff:.2e}, file {exported.size / 1e6:.1f} MB"
    )
    for n in (1, 32):
        batch = np.random.default_rng(0).standard_normal((n, 3, size, size), dtype=np.float32)
        onnx = median_ms(lambda b: session.run(None, {"image": b}), batch, repeats)
        with torch.inference_mode():
            ref = median_ms(lambda b: eager(torch.from_numpy(b)), batch, repeats)
        print(
            f"  batch {n:>2}: onnxruntime {onnx:8.2f} ms   torch eager {ref:8.2f} ms   "
            f"onnxruntime is {ref / onnx:.2f}x as fast"
        )
    return bool(parity.passed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=names(), default="smallcnn,resnet18")
    parser.add_argument("--repeats", type=at_least(1), default=20)
    args = parser.parse_args()
    print(
        f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, "
        f"providers: {providers()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ok = [bench(m, Path(tmp), args.repeats) for m in args.models.split(",")]
    raise SystemExit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()

"""Training, inference and prediction figures.

Training: a studio run (events, checkpoints, progress on) against ``bench.train_bench``'s plain
loop, alternated (plain, studio, studio, plain, …), warm epochs only. Inference: the exporter's
ONNX file on onnxruntime against torch eager, same model and inputs, batch 1 and 32. Prediction:
``POST /api/v1/export/{id}/predict`` with 32 images against the exporter's ``Predictor`` called
directly on the same file and images. Imports torch, onnxruntime, httpx, the engines and the
bench helpers.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench import train_bench
from bench.core import Row, data_of, interleave, median_ratio
from bench.loadgen import hammer, request
from contracts.training import Hyperparameters
from services.exporter.engine import export_onnx
from services.exporter.engine.predict import Predictor
from services.exporter.engine.runtime import open_session
from services.trainer.engine import Sample, train
from services.vision.models import build_model
from tests import imagesets
from tests.stack import Stack

API = "/api/v1"


def training(stack: Stack, api: httpx.Client, args: Any) -> tuple[Row, str, str]:
    """The throughput row, the project id and the last studio run's id."""
    opts = argparse.Namespace(model="smallcnn", epochs=args.train_epochs, image_size=64,
                              batch_size=32)  # fmt: skip
    folder = imagesets.squares(stack.imports / "squares", args.train_images // 2, size=64)
    pid = train_bench.prepare(api, folder)
    sid, names = train_bench.split(api, pid, "throughput", 0.8, 0.2)
    hyper = {"model": "smallcnn", "batch_size": 32, "learning_rate": 1e-3, "image_size": 64,
             "augmentation": "none", "schedule": "none"}  # fmt: skip
    body = {"project_id": pid, "split_id": sid, "hyperparameters": hyper}
    runs: list[str] = []

    def studio() -> float:
        run, _ = train_bench.studio_run(api, body, args.train_epochs)
        if run["status"] != "completed":
            raise RuntimeError(f"run {run['id']} {run['status']}: {run.get('message')}")
        runs.append(run["id"])
        return statistics.median([e["images_per_second"] for e in run["history"]][1:])

    def plain() -> float:
        return statistics.median(train_bench.baseline(folder, names, opts)[1:])

    s, b = interleave(studio, plain, args.train_rounds)
    note = (f"{len(names)} training images, batch 32, median of epochs 2..{args.train_epochs}; "
            "baseline plain PyTorch loop, same data/model/batch/seed")  # fmt: skip
    row = Row("training throughput (smallcnn 64 px, CPU)", "img/s", s, b, median_ratio(s, b),
              "≥ 0.97", note)  # fmt: skip
    return row, pid, runs[-1]


class _Quiet:
    def on_batch(self, *args: object) -> None: ...

    def on_epoch(self, *args: object) -> None: ...

    def should_stop(self) -> bool:
        return False


def inference(root: Path, args: Any) -> list[Row]:
    model, size = args.inference_model, 224 if args.inference_model != "smallcnn" else 64
    images = imagesets.squares(root / "infer", 4, size=size)
    samples = [(p, 0 if p.parent.name == "tl" else 1) for p in sorted(images.rglob("*.png"))]
    h = Hyperparameters(model=model, epochs=1, batch_size=8, image_size=size, augmentation="none")
    data = [Sample(p, label) for p, label in samples]
    train(h, ["br", "tl"], data, data, root / "infer-run", "cpu", _Quiet())
    checkpoint = root / "infer-run" / "last.pt"
    exported = export_onnx(checkpoint, root / "infer.onnx", samples)
    session = open_session(exported.path)
    eager = build_model(model, 2)
    eager.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    eager.eval()
    rows, passed = [], "passed" if exported.parity and exported.parity.passed else "FAILED"
    for n in (1, 32):
        x = np.random.default_rng(0).standard_normal((n, 3, size, size), dtype=np.float32)
        repeats = max(3, args.inference_repeats // (n // 8 + 1))

        def per_second(fn: Any, x: np.ndarray = x, repeats: int = repeats) -> float:
            fn(x)
            start = time.perf_counter()
            for _ in range(repeats):
                fn(x)
            return repeats * len(x) / (time.perf_counter() - start)

        with torch.inference_mode():
            s, b = interleave(lambda: per_second(lambda v: session.run(None, {"image": v})),
                              lambda: per_second(lambda v: eager(torch.from_numpy(v))),
                              args.rounds)  # fmt: skip
        rows.append(Row(f"inference {model} {size} px, batch {n}", "img/s", s, b,
                        median_ratio(s, b), "≥ 1.5 at batch 32",
                        f"onnxruntime ({session.get_providers()[0]}) vs torch eager; "
                        f"parity {passed}"))  # fmt: skip
    return rows


def prediction(stack: Stack, api: httpx.Client, run_id: str, root: Path, args: Any) -> Row:
    job = api.post(f"{API}/export/run", json={"run_id": run_id, "checkpoint": "last"})
    if job.status_code != 202:
        raise RuntimeError(f"export refused: {job.status_code} {job.text}")
    export_id = job.json()["data"]["id"]
    deadline = time.monotonic() + 300
    while (e := data_of(api, "GET", f"{API}/export/{export_id}"))["status"] != "completed":
        if e["status"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"export {e['status']}: {e}")
        time.sleep(0.5)
    model = root / "predict.onnx"
    model.write_bytes(api.get(f"{API}/export/{export_id}/download").content)
    images = [_png(i) for i in range(32)]
    boundary = uuid.uuid4().hex
    parts = (
        b"".join(
            b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%d.png"\r\n'
            b"Content-Type: image/png\r\n\r\n%s\r\n" % (boundary.encode(), i, data)
            for i, data in enumerate(images)
        )
        + b"--%s--\r\n" % boundary.encode()
    )
    headers = stack.headers() | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    req = request("POST", f"{API}/export/{export_id}/predict", headers, parts)
    port, predictor = int(stack.base_url.rsplit(":", 1)[1]), Predictor()
    predictor.predict(model, images)

    def studio() -> float:
        load = hammer("127.0.0.1", port, lambda _: req, 1, args.seconds)
        if load.errors or not load.done:
            raise RuntimeError(f"predict answered {load.statuses}")
        return 32 * load.rate

    def direct() -> float:
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            predictor.predict(model, images)
            n += 1
        return 32 * n / (time.perf_counter() - start)

    s, b = interleave(studio, direct, args.rounds)
    return Row("prediction endpoint, 32 images", "img/s", s, b, median_ratio(s, b), "≥ 0.7",
               "POST /export/{id}/predict (1 client) vs the exporter's Predictor on the same "
               "ONNX file and PNG bytes, in-process")  # fmt: skip


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    imagesets.noise(seed, 64).save(buf, "PNG")
    return buf.getvalue()

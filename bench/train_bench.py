"""Training through the studio against a plain PyTorch loop, measured side by side in one run.

    .venv/bin/python -m bench.train_bench [--images-per-class 200] [--epochs 3] [--image-size 64]
        [--batch-size 32] [--model smallcnn]

Prints images/s of the training passes of both sides per epoch and their ratio, then the delay
from an epoch's ``occurred_at`` to its ``epoch_end`` at an SSE client. Fails only when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from bench.arguments import typed
from bench.core import data_of
from services.trainer.engine import build_model, pick_device
from tests import imagesets
from tests.stack import Stack

API = "/api/v1"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as the engine's
OPTIONS = dict(images_per_class=200, epochs=3, image_size=64, batch_size=32, model="smallcnn")
FINAL = ("completed", "failed", "stopped", "interrupted")
NOTES = (
    "same: device, model, AdamW lr 1e-3 wd 1e-4, batch, resize + centre crop + normalise, 0 workers"
    ", shuffle, one process each. Studio only: per image a derived seed, the CPU RNG saved/set/"
    "restored, exif_transpose, draft() (a no-op on PNGs); per batch a stop poll, ≤4 progress "
    "messages/s; on CUDA channels_last, AMP, pinned memory (the baseline stays fp32, contiguous)."
)
LATENCY = (
    "from the stamp set when the trainer stores the epoch, after writing and uploading its "
    "checkpoint, through the JetStream append, the gateway and its SSE write, to this client"
)


def baseline(folder: Path, names: set[str], args: argparse.Namespace) -> list[float]:
    """images/s of each training pass of a plain loop over the files named in ``names``."""
    size, scale = args.image_size, v2.ToDtype(torch.float32, scale=True)
    resize = [v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.PILToTensor(), scale]
    transform = v2.Compose([*resize, v2.Normalize(MEAN, STD)])
    data = ImageFolder(str(folder), transform, is_valid_file=lambda p: Path(p).name in names)
    drop = len(data) % args.batch_size == 1  # as the engine does, for BatchNorm
    loader = DataLoader(data, args.batch_size, shuffle=True, num_workers=0, drop_last=drop)
    torch.manual_seed(0)
    device = pick_device()  # as the trainer's (STUDIO_DEVICE=auto)
    model = build_model(args.model, len(data.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    criterion, rates = torch.nn.CrossEntropyLoss(), []
    for _ in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for images, labels in loader:
            loss = criterion(model(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
        rates.append((len(data) - drop) / (time.perf_counter() - start))
    return rates


def watch(url: str, delays: list[float]) -> None:
    """An SSE client of one run: ms from each ``epoch_end``'s ``occurred_at`` to its arrival."""
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=120)) as resp:
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "epoch_end":
                now = datetime.now(UTC)
                stamp = datetime.fromisoformat(json.loads(line[6:])["occurred_at"])
                delays.append((now - stamp).total_seconds() * 1000)


def studio_run(api: httpx.Client, body: dict, epochs: int) -> tuple[dict, list[float]]:
    """Submits a run, watches its SSE stream, polls until it ends: (the run, SSE delays)."""
    hyper = body["hyperparameters"] | {"epochs": epochs}
    resp = api.post(f"{API}/training/run", json=body | {"hyperparameters": hyper})
    if resp.status_code != 202:
        raise RuntimeError(f"run refused: {resp.status_code} {resp.text}")
    run_id = resp.json()["data"]["id"]
    url, delays = f"{api.base_url}{API}/training/runs/{run_id}/stream", list[float]()
    watcher = threading.Thread(target=watch, args=(url, delays), daemon=True)
    watcher.start()  # connected long before the first epoch ends
    deadline = time.monotonic() + 900
    while (run := data_of(api, "GET", f"{API}/training/runs/{run_id}"))["status"] not in FINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run still {run['status']} after 900 s")
        time.sleep(0.5)
    watcher.join(30)
    return run, delays


def prepare(api: httpx.Client, folder: Path) -> str:
    """A project with ``folder`` imported; its id."""
    pid = data_of(api, "POST", f"{API}/projects", json={"name": "train bench"})["id"]
    body = {"project_id": pid, "path": str(folder)}
    job = data_of(api, "POST", f"{API}/datasets/import/local", json=body)
    while job["state"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.1)
        job = data_of(api, "GET", f"{API}/datasets/import/{job['id']}")
    if job["state"] != "completed":
        raise RuntimeError(f"import {job['state']}: {job.get('error')}")
    return str(pid)


def split(api: httpx.Client, pid: str, name: str, train: float, val: float) -> tuple[str, set]:
    """A split's id and the file names of its training subset."""
    ratios = {"train": train, "val": val, "test": round(1 - train - val, 6)}
    body = {"project_id": pid, "name": name, "ratios": ratios, "seed": 1}
    sid = data_of(api, "POST", f"{API}/splits", json=body)["id"]
    names: set[str] = set()
    params = {"split_id": sid, "subset": "train", "limit": 500}
    while params.get("cursor", True):
        page = data_of(api, "GET", f"{API}/datasets/{pid}/images", params=params)
        names |= {Path(item["filename"]).name for item in page["items"]}
        params["cursor"] = page["next_cursor"]
    return sid, names


def row(name: str, values: list[float], fmt: str = ".1f") -> str:
    median = f"{statistics.median(values):>9{fmt}}" if values else ""
    return f"{name:>14} " + "".join(f"{v:>9{fmt}}" for v in values) + median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=typed(default), default=default)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="train-bench-"))
    threads = str(torch.get_num_threads())  # the plain loop's, for the studio's trainer too
    stack, n, load = Stack(root, OMP_NUM_THREADS=threads), args.images_per_class, os.getloadavg()[0]
    folder = imagesets.squares(stack.imports / "squares", n, size=args.image_size)
    hyper = {"model": args.model, "batch_size": args.batch_size, "learning_rate": 1e-3}
    hyper |= {"image_size": args.image_size, "augmentation": "none", "schedule": "none"}
    print(f"{2 * n} {args.image_size}px PNGs (squares), split 80/20/0, {args.epochs} epochs")
    runs: list[tuple[dict, list[float]]] = []
    try:
        with httpx.Client(base_url=stack.up().base_url, timeout=60) as api:
            pid = prepare(api, folder)
            sid, names = split(api, pid, "throughput", 0.8, 0.2)
            base = baseline(folder, names, args)  # right before the studio's run
            body = {"project_id": pid, "split_id": sid, "hyperparameters": hyper}
            runs.append(studio_run(api, body, args.epochs))
            after = baseline(folder, names, args)  # shows whether the machine's speed drifted
            train = min(0.8, 64 / (2 * n))  # the latency run: 20 epochs of 64 training images
            body["split_id"] = split(api, pid, "latency", train, min(train / 4, 1 - train))[0]
            runs.append(studio_run(api, body, 20))
    finally:
        stack.down()
        for name in ("trainer", "gateway", "datasets"):
            bad = [ln for ln in stack.log(name).splitlines() if "ERROR" in ln or "Traceback" in ln]
            if bad:
                print(f"{name}.log: {len(bad)} error lines, first: {bad[0][:200]}")
        shutil.rmtree(root, ignore_errors=True)
    for r, _ in runs:
        print(f"run {r['id'][:8]}: {r['status']}, {r['train_images']}/{r['val_images']} "
              f"train/val images on {r['device']} {r['message'] or ''}")  # fmt: skip
    studio = [e["images_per_second"] for e in runs[0][0]["history"]]
    ratios = [s / b for s, b in zip(studio, base, strict=False)]
    print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average "
          f"{load:.1f} before, {os.getloadavg()[0]:.1f} after\n{NOTES}")  # fmt: skip
    print("\nimages/s of the training passes (the engine times the training pass only)")
    print(f"{'epoch':>14} " + "".join(f"{e:>9}" for e in range(1, len(base) + 1)) + "   median")
    print(row("plain PyTorch", base), row("studio", studio), sep="\n")
    print(row("studio/plain", ratios, ".3f"), row("plain, after", after), sep="\n")
    if delays := sorted(runs[1][1]):
        p50, p99 = (delays[round(q * (len(delays) - 1))] for q in (0.5, 0.99))
        print(f"\nepoch_end occurred_at → SSE client, {len(delays)} epochs: p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, max {delays[-1]:.1f} ms\n  ({LATENCY})")  # fmt: skip
    failed = any(r["status"] != "completed" for r, _ in runs)
    drift = statistics.median(after) / statistics.median(base)
    shaky = " - the machine's speed changed, trust no ratio" if abs(drift - 1) > 0.1 else ""
    print(f"\nverdict: studio/plain {statistics.median(ratios or [0]):.3f} (goal ≥ 0.97); plain "
          f"after/before {drift:.2f}{shaky}{'; A RUN FAILED' * failed}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

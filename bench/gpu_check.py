"""The prepared GPU check: the engine on a GPU against a plain PyTorch loop, in one call.

    python -m bench.gpu_check                     # on a CUDA machine: resnet50 + convnext_tiny
    python -m bench.gpu_check --device cpu --tiny # the same path in seconds (``make test`` runs it)
    python -m bench.gpu_check --json out.json     # also the figures as JSON

Prints one table: training throughput of the engine (AMP bf16 + channels_last on CUDA) against a
plain loop in fp32 and with the same AMP, interleaved over ``--rounds``; GPU memory peak and
utilisation (pynvml) of each; exact resume (stop after epoch 1 and resume, against an
uninterrupted run, deterministic algorithms on); export parity of the GPU-trained checkpoint and
onnxruntime latency on the best provider; the loader alone against the training step alone.
Runs on a machine with no network: missing pure-Python or binary wheels are taken from
``bench/wheels/`` (unpacked into ``bench/wheels/site``, never installed). Never fails because of
a speed; exits 1 only when a part breaks (an exception, a failed parity check).
Imports only the standard library at the top: the rest comes after the wheels are on the path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.arguments import at_least, names

HERE = Path(__file__).resolve().parent
WHEELS = HERE / "wheels"
NEEDED = ("torch", "torchvision", "msgspec", "onnx", "onnxruntime", "onnxscript", "onnx_ir",
          "ml_dtypes", "packaging", "PIL", "numpy")  # fmt: skip
GPU = {"models": "resnet50,convnext_tiny", "image_size": 224, "images": 2048, "batch_size": 128,
       "epochs": 2, "rounds": 2, "resume_images": 512, "steps": 30, "workers": -1}  # fmt: skip
TINY = {"models": "smallcnn", "image_size": 32, "images": 48, "batch_size": 16,
        "epochs": 2, "rounds": 1, "resume_images": 32, "steps": 3, "workers": 0}  # fmt: skip


def bring_wheels(wheels: Path = WHEELS, needed: tuple[str, ...] = NEEDED) -> list[str]:
    """Unpacks every wheel in ``bench/wheels`` (a wheel is a zip of its site-packages files)
    into ``bench/wheels/site`` and puts that first on the path; returns what is still missing."""
    site = wheels / "site"
    for wheel in sorted(wheels.glob("*.whl")):
        stamp = site / f".{wheel.name}.unpacked"
        if not stamp.exists():
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
            stamp.touch()
    if site.is_dir():
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    importlib.invalidate_caches()
    return [name for name in needed if importlib.util.find_spec(name) is None]


class Table:
    """Rows of (part, what, figure, note), printed as one aligned table at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.data: dict[str, Any] = {}
        self.failed = False

    def add(self, part: str, what: str, figure: str, note: str = "", **data: Any) -> None:
        self.rows.append((part, what, figure, note))
        if data:
            self.data[f"{part}/{what}"] = data
        print(f"  {part:<10} {what:<34} {figure:<28} {note}", flush=True)

    def print(self, header: str) -> None:
        print(f"\n{header}")
        widths = [max(len(r[i]) for r in [("part", "what", "figure", "note"), *self.rows])
                  for i in range(4)]  # fmt: skip
        lines = [("part", "what", "figure", "note"), tuple("-" * w for w in widths), *self.rows]
        for row in lines:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def one_side(side: str, model: str, sets: dict[str, Any], plan: Any, r: int) -> list[float]:
    """images/s of each epoch of one side: the engine, or the plain loop (fp32 or AMP)."""
    from bench import gpu_parts as g

    if side == "engine":
        workdir = sets["root"] / f"{model}-{r}"
        epochs = g.engine_train(model, sets["train"], sets["val"], plan, workdir)
        return [m.images_per_second for m in epochs]
    return g.plain_train(model, sets["train"], plan, amp=side == "plain amp")


def throughput(model: str, sets: dict[str, Any], plan: Any, args: Any, table: Table) -> None:
    """Engine, plain fp32 and plain AMP interleaved over rounds; warm epochs (after the first)."""
    from bench import gpu_parts as g

    cuda = plan.device.startswith("cuda")
    sides: dict[str, list[float]] = {"engine": [], "plain fp32": [], "plain amp": []}
    mem: dict[str, float | None] = {}
    util: dict[str, str] = {}
    sampler = g.GpuSampler(plan.device)
    for r in range(args.rounds):
        for side in sides:
            if side == "plain amp" and not cuda:
                continue  # the engine uses AMP on CUDA only; on CPU it is the fp32 loop
            with sampler:
                rates, peak = g.peak_gib(plan.device, partial(one_side, side, model, sets, plan, r))
            sides[side] += rates[1:] or rates  # epoch 1 carries the warm-up
            mem[side], util[side] = peak, sampler.summary()
    engine = sides["engine"]
    for side, rates in sides.items():
        if not rates:
            table.add(model, f"{side} img/s", "-", "not run on CPU (AMP is CUDA-only)")
            continue
        ratio = statistics.median(engine) / statistics.median(rates)
        gib = f"peak {mem[side]:.1f} GiB, " if mem.get(side) is not None else ""
        table.add(model, f"{side} img/s min/med/max", spread(rates),
                  f"engine/this {ratio:.3f}; {gib}{util[side]}",
                  rates=rates, engine_ratio=ratio, peak_gib=mem.get(side),
                  gpu=util[side])  # fmt: skip


def resume_part(sets: dict[str, Any], plan: Any, model: str, table: Table) -> Path:
    from bench import gpu_parts as g

    n = len(sets["resume"])
    res = g.exact_resume(model, sets["resume"], sets["val"], plan, sets["root"] / "resume")
    verdict = "exact" if res.exact else "NOT exact"
    table.add("resume", f"{model}, {n} images, stop after 1 of 2", verdict,
              f"max |loss diff| {res.max_loss_diff:.3g}, weights equal {res.weights_equal}; "
              f"{res.deterministic_note}", exact=res.exact, losses=res.losses)  # fmt: skip
    return res.checkpoint


def export_part(checkpoint: Path, sets: dict[str, Any], plan: Any, table: Table) -> None:
    from services.exporter.engine import export_onnx, providers

    samples = [(s.path, s.label) for s in sets["val"][:16]]
    out = sets["root"] / "model.onnx"
    exported = export_onnx(checkpoint, out, samples)
    p, lat = exported.parity, exported.latency
    if p is None or lat is None:
        raise RuntimeError("the exporter returned no parity or latency")
    table.failed |= not p.passed
    table.add("export", "parity (GPU-trained checkpoint)", "passed" if p.passed else "FAILED",
              f"max |diff| {p.max_abs_diff:.2e}, top-1 agreement {p.top1_agreement:.3f}",
              passed=p.passed, max_abs_diff=p.max_abs_diff)  # fmt: skip
    names = providers()
    where = "CUDA provider" if names[0].startswith("CUDA") else "CPU provider"
    note = "" if plan.device == "cpu" or where.startswith("CUDA") else (
        "onnxruntime has no CUDA provider here (onnxruntime-gpu not installed)")  # fmt: skip
    for b in (1, 32):
        onnx_ms, torch_ms = getattr(lat, f"onnx_b{b}"), getattr(lat, f"torch_b{b}")
        table.add("export", f"onnxruntime batch {b} ms ({where})", f"{onnx_ms:.2f}",
                  f"torch eager (CPU) {torch_ms:.2f} ms; x{torch_ms / onnx_ms:.2f} {note}",
                  onnx_ms=onnx_ms, torch_ms=torch_ms, providers=names)  # fmt: skip


def loader_part(model: str, sets: dict[str, Any], plan: Any, args: Any, table: Table) -> None:
    from bench import gpu_parts as g

    loader, step = g.loader_and_step(model, sets["train"], sets["val"], plan, args.steps)
    bound = "loader-bound: the GPU waits" if loader < step else "step-bound"
    table.add("loader", f"{model} loader alone / step alone", f"{loader:.0f} / {step:.0f} img/s",
              f"{bound} ({plan.workers} workers)", loader=loader, step=step)  # fmt: skip


def run(args: argparse.Namespace, table: Table) -> None:
    import torch

    from bench import gpu_parts as g
    from services.trainer.engine import pick_device

    device = pick_device(args.device)
    workers = args.workers if args.workers >= 0 else min(16, max(0, (os.cpu_count() or 1) - 1))
    plan = g.Plan(device, args.image_size, args.batch_size, args.epochs, workers)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__} on {name} ({device}); {os.cpu_count()} cores, "
          f"{workers} loader workers; budget {args.budget_s:.0f} s", flush=True)  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        sets = {"root": root, "train": g.make_images(root / "train", args.images, args.image_size),
                "val": g.make_images(root / "val", 32, args.image_size, seed=1),
                "resume": g.make_images(root / "resume", args.resume_images, args.image_size,
                                        seed=2)}  # fmt: skip
        models = args.models.split(",")
        checkpoint: list[Path] = []
        parts: list[tuple[str, Callable[[], object]]] = [
            (f"throughput {m}", partial(throughput, m, sets, plan, args, table)) for m in models
        ]
        parts.append(("loader", partial(loader_part, models[0], sets, plan, args, table)))
        resume = partial(resume_part, sets, plan, models[0], table)
        parts.append(("resume", lambda: checkpoint.append(resume())))
        parts.append(("export", lambda: export_part(checkpoint[0], sets, plan, table)))
        for title, part in parts:
            if time.monotonic() - started > args.budget_s:
                table.add(title, "skipped", "-", f"over the {args.budget_s:.0f} s budget")
                continue
            print(f"{title} ...", flush=True)
            began = time.monotonic()
            try:
                part()
            except Exception as exc:  # one broken part must not hide the others' figures
                table.failed = True
                traceback.print_exc()
                table.add(title, "FAILED", type(exc).__name__, str(exc)[:120])
            table.data.setdefault("part_seconds", {})[title] = time.monotonic() - began
    table.data["seconds"] = time.monotonic() - started


def checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses, before any work, what only torch and the contracts know: a device this machine
    does not have, a model not in the zoo, sizes outside a run's bounds (a usage error, exit 2)."""
    from contracts.training import hyperparameter_bounds
    from services.trainer.engine import pick_device
    from services.vision.models import HEADS

    if args.json is not None and not args.json.parent.is_dir():  # else lost after the run
        parser.error(f"argument --json: {args.json.parent} is not a folder")
    try:
        pick_device(args.device)
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")
    unknown = [name for name in args.models.split(",") if name not in HEADS]
    if unknown:
        parser.error(
            f"argument --models: unknown {', '.join(unknown)}; expected {', '.join(HEADS)}"
        )
    for key in ("image_size", "batch_size", "epochs"):
        bounds, value = hyperparameter_bounds(key), getattr(args, key)
        if not bounds.get("ge", value) <= value <= bounds.get("le", value):
            parser.error(f"argument --{key.replace('_', '-')}: {value} is outside "
                         f"{bounds['ge']}-{bounds['le']}")  # fmt: skip


def parsed(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    parser.add_argument("--budget-s", type=at_least(1, float), default=420.0,
                        help="skip parts past this")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    for key in GPU:
        kind = names() if key == "models" else at_least(-1 if key == "workers" else 1)
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind)
    args = parser.parse_args(argv)
    for key, value in (TINY if args.tiny else GPU).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parsed(argv)
    # cuBLAS is deterministic only with a fixed workspace; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    missing = bring_wheels()
    if missing:
        print(f"missing modules: {', '.join(missing)}; bring their wheels into {WHEELS} "
              "(bench/README.md, 'gpu_check')", file=sys.stderr)  # fmt: skip
        return 2
    checked(parser, args)
    table = Table()
    run(args, table)
    table.print(f"gpu_check ({'tiny, ' if args.tiny else ''}{table.data['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(table.data | {"failed": table.failed}, indent=2))
    return 1 if table.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

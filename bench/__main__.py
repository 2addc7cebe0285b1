"""``python -m bench`` (``make bench``): every performance figure of the studio in one table.

    .venv/bin/python -m bench [--quick] [--only codec,append,...] [--json bench/results.json]

Each figure is a ratio against a baseline measured side by side in the same run (interleaved,
repeated, min/median/max); see bench/README.md for what each side does. A figure that breaks
prints its error in its row and the others go on; nothing fails because of a speed (exit 1 only
when a figure broke). Writes every row, with its raw repeats, to the git-ignored
bench/results.json. Imports the bench figure modules and ``tests.stack``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.arguments import names
from bench.core import Row, table

FULL: dict[str, Any] = {
    "rounds": 3, "seconds": 3.0, "events": 2000, "epochs_streamed": 20, "sse_clients": 1000,
    "train_images": 400, "train_epochs": 3, "train_rounds": 2, "inference_model": "resnet18",
    "inference_repeats": 6, "import_images": 10_000, "import_repeats": 2,
    "memory_images": (10_000, 40_000),
}  # fmt: skip
QUICK: dict[str, Any] = FULL | {
    "rounds": 2, "seconds": 1.0, "events": 400, "epochs_streamed": 5, "sse_clients": 50,
    "train_images": 80, "train_epochs": 2, "train_rounds": 1, "inference_model": "smallcnn",
    "inference_repeats": 3, "import_images": 500, "import_repeats": 1, "memory_images": (300, 1200),
}  # fmt: skip
FIGURES = ("codec", "append", "gateway", "stream", "training", "prediction", "memory",
           "inference", "import")  # fmt: skip


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.rows, self.broken = args, list[Row](), False
        self.seconds: dict[str, float] = {}

    def figure(self, name: str, make: Callable[[], Row | list[Row]]) -> None:
        if name not in self.args.only:
            return
        print(f"== {name} ...", flush=True)
        start = time.monotonic()
        try:
            made = make()
            got = made if isinstance(made, list) else [made]
        except Exception as exc:  # one broken figure must not hide the others
            traceback.print_exc()
            self.broken = True
            got = [Row(name, "-", [], note=f"BROKE: {type(exc).__name__}: {str(exc)[:150]}")]
        self.seconds[name] = time.monotonic() - start
        for row in got:
            print(table([row]).splitlines()[-1], flush=True)
        self.rows += got


def compute_threads() -> str:
    """The torch threads of the baselines in this process, for the studio's services too (a
    test stack runs one per process: it shares two cores with its client and a browser)."""
    import torch

    return str(torch.get_num_threads())


def with_stack(run: Runner, root: Path) -> None:
    from bench import fig_gateway, fig_import, fig_kernel, fig_stream, fig_train
    from tests.stack import Stack

    a = run.args
    stack = Stack(root, STUDIO_LOG_LEVEL="ERROR", OMP_NUM_THREADS=compute_threads())
    stack.up(timeout=180)
    found: dict[str, str] = {}
    try:
        with stack.sync_client(timeout=120) as api:
            run.figure("gateway", lambda: fig_gateway.run(stack, api, a, root))

            def training() -> Row:
                row, found["project"], found["run"] = fig_train.training(stack, api, a)
                return row

            run.figure("training", training)
            if "run" in found:
                predict = lambda: fig_train.prediction(stack, api, found["run"], root, a)  # noqa: E731
                run.figure("prediction", predict)
            run.figure("memory", lambda: fig_import.memory(stack, api, a))
            # Last on this stack: its thousands of training events keep the gateway's
            # projections busy for a while, which the figures above must not measure.
            run.figure("append", lambda: fig_kernel.append(stack.nats_url, a))
    finally:
        stack.down()
    run.figure("stream", lambda: fig_stream.run(root, a))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", type=names(FIGURES), default=",".join(FIGURES),
                        help="comma-separated figures")  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results.json")
    ns = parser.parse_args(argv)
    args = argparse.Namespace(**(QUICK if ns.quick else FULL), only=ns.only.split(","))
    from bench import fig_import, fig_kernel, fig_train

    run, started = Runner(args), time.monotonic()
    load = os.getloadavg()
    print(f"cores {os.cpu_count()}, load average {load[0]:.1f}; figures: {', '.join(args.only)}")
    run.figure("codec", lambda: fig_kernel.codec(args))
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        if set(args.only) & {"append", "gateway", "stream", "training", "prediction", "memory"}:
            with_stack(run, root)
        run.figure("inference", lambda: fig_train.inference(root, args))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run.figure("import", lambda: fig_import.throughput(args))
    took = time.monotonic() - started
    print(f"\n{table(run.rows)}\n\n{took / 60:.1f} min on {os.cpu_count()} cores; load average "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after; per figure (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in run.seconds.items()))  # fmt: skip
    ns.json.write_text(json.dumps({
        "seconds": took, "cores": os.cpu_count(), "load_before": load[0],
        "load_after": os.getloadavg()[0], "figure_seconds": run.seconds,
        "rows": [r.as_dict() for r in run.rows], "quick": ns.quick,
    }, indent=1, default=str))  # fmt: skip
    return 1 if run.broken else 0


if __name__ == "__main__":
    sys.exit(main())

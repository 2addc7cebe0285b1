"""Benchmark of a local-folder import against Pillow's own open+verify, measured in the same run.

    .venv/bin/python -m bench.import_bench [--images 10000] [--size 64] [--keep]

Imports N/5 then N seeded-noise JPEGs into two projects of a real studio (``tests.stack``),
samples the datasets service's and the gateway's RSS every 50 ms, and prints throughput as a
ratio to the baseline. It fails only when an import fails, never because of a speed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.stack import Stack

API = "/api/v1"
SAMPLE_S = 0.05
ROW = "{:>7} {:>9} {:>7} {:>9} {:>8} {:>6} {:>23} {:>22}"
MEASURED = ("datasets", "gateway")
HEAD = ("images", "studio s", "img/s", "pillow s", "img/s", "ratio")


def generate(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = folder / f"class_{i % 10}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path, "JPEG")
        paths.append(path)
    return paths


def pillow_baseline(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            img.verify()
    return time.perf_counter() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss(threading.Thread):
    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak = pids, {name: rss_mib(pid) for name, pid in pids.items()}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_S):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mib(pid))

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()


def studio_import(api: httpx.Client, folder: Path, timeout: float) -> tuple[float, dict, dict]:
    """(seconds from the POST to completion, the job, seconds seen in each state/phase)."""
    pid = api.post(f"{API}/projects", json={"name": f"bench {folder.name}"}).json()["data"]["id"]
    started = time.perf_counter()
    resp = api.post(f"{API}/datasets/import/local", json={"project_id": pid, "path": str(folder)})
    if resp.status_code != 202:
        raise RuntimeError(f"import refused: {resp.status_code} {resp.text}")
    seen = time.perf_counter()
    job_id, phases, last = resp.json()["data"]["id"], {"POST→202": seen - started}, None
    while True:
        job = api.get(f"{API}/datasets/import/{job_id}").json()["data"]
        now = time.perf_counter()
        if last is not None:
            phases[last] = phases.get(last, 0.0) + now - seen
        if job["state"] in ("completed", "failed", "cancelled"):
            return now - started, job, phases
        if now - started > timeout:
            raise RuntimeError(f"import still not over after {timeout:.0f} s: {job}")
        last = f"{job['state']}/{(job.get('progress') or {}).get('phase', '-')}"
        seen = now
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (stack logs)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="import-bench-"))
    stack = Stack(root)
    sizes = [max(1, args.images // 5), args.images]
    print(f"cores: {os.cpu_count()}  (usable: {len(os.sched_getaffinity(0))})  root: {root}")
    print(f"generating {sum(sizes)} {args.size}x{args.size} JPEGs ...", flush=True)
    sets = [
        (stack.imports / f"set_{n}", generate(stack.imports / f"set_{n}", n, args.size, seed))
        for seed, n in enumerate(sizes, start=1)
    ]
    for _, paths in sets:  # warm the page cache for both sides
        for path in paths:
            path.read_bytes()
    rows, failed = [], False
    try:
        stack.up()
        pids = {name: stack.procs[name].pid for name in MEASURED}
        with httpx.Client(base_url=stack.base_url, timeout=60) as api:
            for folder, paths in sets:
                n = len(paths)
                base_s = pillow_baseline(paths)
                idle = {name: rss_mib(pid) for name, pid in pids.items()}
                with PeakRss(pids) as rss:
                    secs, job, phases = studio_import(api, folder, timeout=max(300.0, n * 0.5))
                imported = (job.get("report") or {}).get("imported")
                ok = job["state"] == "completed" and imported == n
                failed |= not ok
                rows.append((n, secs, base_s, idle, rss.peak))
                top = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(phases.items()))
                print(f"  {n} images: {job['state']}, imported={imported}; phases: {top}")
                if not ok:
                    print(f"  job: {job}")
    finally:
        stack.down()
        for name in ("datasets", "gateway", "projects"):
            bad = [ln for ln in stack.log(name).splitlines() if "ERROR" in ln or "Traceback" in ln]
            if bad:
                print(f"{name}.log: {len(bad)} error lines, first: {bad[0][:200]}")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print("\n" + ROW.format(*HEAD, *(f"{k} MiB idle→peak" for k in MEASURED)))
    for n, secs, base_s, idle, peak in rows:
        mem = [f"{idle[k]:.0f} → {peak[k]:.0f}" for k in MEASURED]
        speed = [f"{secs:.2f}", f"{n / secs:.0f}", f"{base_s:.2f}", f"{n / base_s:.0f}"]
        print(ROW.format(n, *speed, f"{base_s / secs:.3f}", *mem))
    if len(rows) == 2 and rows[1][0] > rows[0][0]:
        per_k = 1000 / (rows[1][0] - rows[0][0])
        grow = {k: (rows[1][4][k] - rows[0][4][k]) * per_k for k in MEASURED}
        ratio = sum(r[2] for r in rows) / sum(r[1] for r in rows)
        flat = "flat" if max(grow.values()) < 1.0 else "NOT flat"
        print(
            f"\nverdict: studio throughput is {ratio:.3f}x Pillow open+verify; peak RSS per 1000 "
            f"images {grow['datasets']:+.1f} MiB datasets, {grow['gateway']:+.1f} MiB gateway "
            f"({flat}){'; AN IMPORT FAILED' if failed else ''}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

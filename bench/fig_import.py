"""Import figures: images/s against one minimal process (``bench.import_bench``, on tmpfs and on
disk), and the peak RSS of the datasets service and the gateway importing 10k and 40k images.

Imports the bench helpers and ``tests.stack``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from bench import import_bench as ib
from bench.core import Row
from tests.stack import Stack


def throughput(args: Any) -> list[Row]:
    rows = []
    for where in ("tmpfs", "disk"):
        place = ib.measure(where, args.import_images, 64, args.import_repeats)
        s, b = place.rates(place.studio_s), place.rates(place.baseline_s)
        rows.append(Row(f"import {args.import_images:,} images ({where})", "img/s", s, b,
                        statistics.median(place.ratios()), "≥ 1.0 on 2 cores",
                        "baseline: one process reads, sha256, decodes, thumbnails, writes, one sync"
                        + ("; AN IMPORT FAILED" if place.failed else "")))  # fmt: skip
    return rows


def memory(stack: Stack, api: httpx.Client, args: Any) -> Row:
    pids = {"datasets": stack.procs["datasets"].pid, "gateway": stack.procs["gateway"].pid}
    peaks: dict[int, dict[str, float]] = {}
    seconds: dict[int, float] = {}
    for i, n in enumerate(args.memory_images):
        folder = stack.imports / f"memory_{n}"
        ib.generate(folder, n, 32, seed=100 + i)
        with ib.PeakRss(pids) as rss:
            start = time.perf_counter()
            secs, job = ib.studio_import(api, folder, max(300, n / 10))
        if job["state"] != "completed":
            raise RuntimeError(f"the {n}-image import {job['state']}: {job.get('error')}")
        peaks[n], seconds[n] = dict(rss.peak), secs or time.perf_counter() - start
    small, big = args.memory_images
    ratio = max(peaks[big][k] / peaks[small][k] for k in pids)
    note = "; ".join(f"{k} {peaks[small][k]:.0f} → {peaks[big][k]:.0f} MiB" for k in pids)
    return Row(f"import memory, peak RSS {small:,} vs {big:,} images", "MiB",
               [peaks[big][k] for k in pids], [peaks[small][k] for k in pids], ratio,
               "flat (≤ 1.2x)", f"{note} (with children); ratio = worst of the two; "
               f"{big:,} imported at {big / seconds[big]:.0f} img/s", {"peaks": peaks})  # fmt: skip

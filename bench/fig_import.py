"""Import figures: images/s against one minimal process (``bench.import_bench``, on tmpfs and on
disk), the same import with the datasets service on all its cores against on 1 core (how it
scales), and the peak RSS of the datasets service and the gateway importing 10k and 40k images.

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

#: Images of each import of the scaling figure (3 repeats a side; fewer images, 1 repeat, --quick).
SCALING_IMAGES = 2_000


def throughput(args: Any) -> list[Row]:
    rows = []
    for where in ("tmpfs", "disk"):
        place = ib.measure(where, args.import_images, 64, args.import_repeats)
        s, b = place.rates(place.studio_s), place.rates(place.baseline_s)
        rows.append(Row(f"import {args.import_images:,} images ({where})", "img/s", s, b,
                        statistics.median(place.ratios()), "≥ 1.0 on 2 cores",
                        "baseline: one process reads, sha256, decodes, thumbnails, writes, one sync"
                        + ("; AN IMPORT FAILED" if place.failed else "")))  # fmt: skip
    rows.append(scaling(args))
    return rows


def scaling(args: Any) -> Row:
    """The same import with the datasets service on all its cores against on 1 core (tmpfs)."""
    images = min(SCALING_IMAGES, args.import_images)
    s = ib.scaling(images, 3 if images >= SCALING_IMAGES else 1)
    return Row(f"import scaling: datasets on all {s.cores} cores vs 1 core ({images:,} images)",
               "img/s", s.rates(s.all_s), s.rates(s.one_s), statistics.median(s.ratios()),
               f"close to {s.cores} (its cores)",
               "datasets service pinned to 1 core vs all (sched_setaffinity; its pool of decoding "
               "processes sizes itself to them); ratio = median of each repeat's pair; tmpfs"
               + ("; AN IMPORT FAILED" if s.failed else ""))  # fmt: skip


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

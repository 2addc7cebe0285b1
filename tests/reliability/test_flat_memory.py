"""An import's and a dataset's memory do not grow with their size (issue 13, "storage that stays
flat"): the peak RSS of the datasets service and of the gateway (the kernel's high-water mark,
``VmHWM``, so no peak is missed between samples) after importing a small set and then a set ten
times larger, each folded into its dataset by a command, stays within 1.2x.

Soak-sized (10,000 then 100,000 images of 8x8 pixels): ``make soak``. ``STUDIO_FLAT_SIZES``
("small,large") sets other sizes, e.g. for a quick look.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.stack import API, Stack

pytestmark = [pytest.mark.integration, pytest.mark.soak]
STACK_SERVICES = ("projects", "datasets")
SIZES = tuple(int(n) for n in os.environ.get("STUDIO_FLAT_SIZES", "10000,100000").split(","))
#: The issue's bound: peak RSS importing the large set within this factor of the small one's.
FLAT = 1.2
#: Whose peaks are measured: the service that imports, and the gateway whose read model gets
#: every image (issue 17's import-memory row).
WATCHED = ("datasets", "gateway")


def tiny_images(folder: Path, count: int, start: int) -> Path:
    """``count`` distinct 8x8 grey PNGs (their pixels spell their number), in two classes."""
    for n in range(start, start + count):
        pixels = n.to_bytes(8, "big") * 8
        buf = io.BytesIO()
        Image.frombytes("L", (8, 8), pixels).save(buf, "PNG")
        path = folder / ("a" if n % 2 else "b") / f"{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return folder


def peak_mib(pid: int) -> float:
    """The process's peak resident memory so far, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def import_and_fold(api: httpx.Client, folder: Path, count: int) -> float:
    """Imports ``folder`` into a new project, then relabels one of its images (which folds the
    whole dataset into the service's state); answers the seconds the import took."""
    pid = api.post(f"{API}/projects", json={"name": f"flat-{count}"}).json()["data"]["id"]
    started = time.monotonic()
    body = {"project_id": pid, "path": str(folder), "format": "folder"}
    job = api.post(f"{API}/datasets/import/local", json=body).json()["data"]
    deadline = started + max(600.0, count / 20)
    while (data := api.get(f"{API}/datasets/import/{job['id']}").json()["data"])["state"] not in (
        "completed", "failed", "cancelled",
    ):  # fmt: skip
        assert time.monotonic() < deadline, data
        time.sleep(0.5)
    took = time.monotonic() - started
    assert data["state"] == "completed" and data["report"]["imported"] == count, data
    image = api.get(f"{API}/datasets/{pid}/images", params={"limit": 1}).json()["data"]["items"][0]
    relabel = api.patch(f"{API}/datasets/{pid}/images/{image['id']}", json={"label": "z"})
    assert relabel.status_code == 200, relabel.text
    return took


def test_peak_memory_of_imports_ten_times_apart_stays_within_1_2x(tmp_path: Path):
    small, large = SIZES
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_GC_INTERVAL_S="0")
    sets = [tiny_images(stack.imports / f"set{n}", n, start) for n, start in
            ((small, 0), (large, small))]  # fmt: skip
    try:
        stack.up(timeout=180)
        pids = {name: stack.procs[name].pid for name in WATCHED}
        with stack.sync_client(timeout=120) as api:
            took = [import_and_fold(api, sets[0], small)]
            after_small = {name: peak_mib(pid) for name, pid in pids.items()}
            took.append(import_and_fold(api, sets[1], large))
            after_large = {name: peak_mib(pid) for name, pid in pids.items()}
    finally:
        stack.down()
    ratios = {name: after_large[name] / after_small[name] for name in WATCHED}
    print(f"\nflat memory: {small:,} images ({took[0]:.0f} s), {large:,} more ({took[1]:.0f} s)")
    for name in WATCHED:
        print(f"  {name} peak RSS {after_small[name]:.0f} -> {after_large[name]:.0f} MiB: "
              f"{ratios[name]:.3f}x")  # fmt: skip
    assert all(ratio <= FLAT for ratio in ratios.values()), (after_small, after_large)

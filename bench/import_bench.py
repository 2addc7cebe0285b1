"""Benchmark of a local-folder import against one plain process doing the minimal work per file,
measured side by side in the same run, on tmpfs and on disk.

    .venv/bin/python -m bench.import_bench [--images 10000] [--repeats 3] [--where tmpfs,disk]

For each place (tmpfs: ``/dev/shm``; disk: the system's temp folder), a real studio
(``tests.stack``) runs with its workspace and import folder there. Each repeat imports a fresh
set of N seeded-noise JPEGs (so nothing is deduplicated against an earlier repeat) and, on a
set of its own, runs the **baseline**: one process that reads each file, hashes it, decodes it,
makes a thumbnail and writes the file and its thumbnail, with one ``os.sync()`` at the end.
Which side goes first alternates. It prints images/s of both (min/median/max over the repeats),
the ratio of each repeat's pair, and the peak RSS of the datasets service (with its decoding
processes) and of the gateway. It fails only when an import fails, never because of a speed.
``measure(where, images, size, repeats)`` is the same, for ``python -m bench``.

    .venv/bin/python -m bench.import_bench --scaling [--images 2000] [--repeats 3]

How the import scales with cores (``scaling``): two studios on tmpfs, one whose datasets
service may run on 1 core only (``sched_setaffinity``, which its pool of decoding processes
inherits and sizes itself to) and one on every core, import fresh sets of the same size in
turn (which goes first alternates), after a small untimed import each that starts their pools;
it prints images/s of both and the ratio all cores / 1 core of each repeat's pair.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from tests.stack import ADMIN, ADMIN_PASSWORD, Stack

API = "/api/v1"
SAMPLE_S = 0.05
THUMB = 256
PLACES = {"tmpfs": Path("/dev/shm"), "disk": Path(tempfile.gettempdir())}


def generate(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = folder / f"class_{i % 10}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path, "JPEG")
        paths.append(path)
    return paths


def minimal_baseline(paths: list[Path], out: Path) -> float:
    """Seconds for one process to read, sha256, decode, thumbnail and write every file (the
    original under its digest, the thumbnail beside it), with one sync at the end."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (THUMB * 2, THUMB * 2))
            thumb = img.convert("RGB")
        thumb.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        thumb.save(buf, "JPEG", quality=85)
        (out / sha).write_bytes(data)
        (out / f"{sha}.jpg").write_bytes(buf.getvalue())
    os.sync()
    return time.perf_counter() - started


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The child processes of every thread of ``pid``: the datasets service starts its decoding
    processes from a worker thread, whose children its main thread's list does not show."""
    found: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):  # the thread ended since
            found += [int(child) for child in listing.read_text().split()]
    return found


def with_children(pid: int) -> float:
    """RSS of a process and its children (the datasets service's decoding processes)."""
    return rss_mib(pid) + sum(rss_mib(child) for child in children(pid))


class PeakRss(threading.Thread):
    """Peak RSS of each named process (with its children) while in the ``with`` block."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak = pids, {name: with_children(pid) for name, pid in pids.items()}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_S):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], with_children(pid))

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()


def studio_import(api: httpx.Client, folder: Path, timeout: float) -> tuple[float, dict]:
    """(seconds from the POST to completion, the job)."""
    pid = api.post(f"{API}/projects", json={"name": f"bench {folder.name}"}).json()["data"]["id"]
    started = time.perf_counter()
    resp = api.post(f"{API}/datasets/import/local", json={"project_id": pid, "path": str(folder)})
    if resp.status_code != 202:
        raise RuntimeError(f"import refused: {resp.status_code} {resp.text}")
    job_id = resp.json()["data"]["id"]
    while True:
        job = api.get(f"{API}/datasets/import/{job_id}").json()["data"]
        now = time.perf_counter()
        if job["state"] in ("completed", "failed", "cancelled"):
            return now - started, job
        if now - started > timeout:
            raise RuntimeError(f"import still not over after {timeout:.0f} s: {job}")
        time.sleep(0.05)


@dataclass
class Place:
    """What one place measured: seconds per repeat of each side, peak RSS in MiB."""

    where: str
    images: int
    studio_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)
    peak_mib: dict[str, float] = field(default_factory=dict)
    failed: bool = False

    def rates(self, seconds: list[float]) -> list[float]:
        return sorted(self.images / s for s in seconds)

    def ratios(self) -> list[float]:
        """Studio over baseline images/s of each repeat (the two ran one after the other, so
        the machine's load was alike for both): the figure to read on a busy machine."""
        return sorted(b / s for s, b in zip(self.studio_s, self.baseline_s, strict=True))


def measure(where: str, images: int, size: int, repeats: int, keep: bool = False) -> Place:
    """Runs the studio and the baseline ``repeats`` times each, interleaved, at ``where``."""
    root = Path(tempfile.mkdtemp(prefix="import-bench-", dir=PLACES[where]))
    stack, place = Stack(root), Place(where, images)
    print(f"{where}: generating {2 * repeats} x {images} {size}x{size} JPEGs in {root}", flush=True)
    sets = [generate(stack.imports / f"set_{i}", images, size, seed=i) for i in range(2 * repeats)]
    for paths in sets:  # a warm page cache for both sides
        for path in paths:
            path.read_bytes()
    try:
        stack.up(timeout=180)  # a busy machine starts it slowly
        pids = {"datasets": stack.procs["datasets"].pid, "gateway": stack.procs["gateway"].pid}
        with stack.sync_client(timeout=60) as api, PeakRss(pids) as rss:
            for r in range(repeats):
                studio_set, base_set = sets[2 * r], sets[2 * r + 1]
                base_first = r % 2 == 1
                if base_first:
                    place.baseline_s.append(minimal_baseline(base_set, root / f"base_{r}"))
                secs, job = studio_import(api, studio_set[0].parent.parent, max(300, images / 10))
                imported = (job.get("report") or {}).get("imported")
                place.failed |= job["state"] != "completed" or imported != images
                place.studio_s.append(secs)
                if not base_first:
                    place.baseline_s.append(minimal_baseline(base_set, root / f"base_{r}"))
                print(f"  repeat {r + 1}: studio {images / secs:.0f} img/s ({job['state']}, "
                      f"imported={imported}), baseline {images / place.baseline_s[-1]:.0f} img/s",
                      flush=True)  # fmt: skip
        place.peak_mib = dict(rss.peak)
    finally:
        stack.down()
        for name in ("datasets", "gateway"):
            log = stack.root / f"{name}.log"  # absent when the stack did not start
            text = log.read_text(errors="replace") if log.exists() else ""
            bad = [ln for ln in text.splitlines() if "ERROR" in ln or "Traceback" in ln]
            if bad:
                print(f"  {name}.log: {len(bad)} error lines, first: {bad[0][:200]}")
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return place


ROW = "| {} | {:,} | {} | {} | {} | {:.0f} | {:.0f} |"


def spread(values: list[float], digits: int = 0) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{low:,.{digits}f} / {mid:,.{digits}f} / {high:,.{digits}f}"


def table(places: list[Place]) -> str:
    lines = [
        "| where | images | studio img/s min/med/max | baseline img/s min/med/max "
        "| ratio per repeat min/med/max | datasets+workers peak MiB | gateway peak MiB |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for p in places:
        rates = spread(p.rates(p.studio_s)), spread(p.rates(p.baseline_s))
        peaks = p.peak_mib.get("datasets", 0), p.peak_mib.get("gateway", 0)
        lines.append(ROW.format(p.where, p.images, *rates, spread(p.ratios(), 2), *peaks))
    return "\n".join(lines)


class PinnedStack(Stack):
    """A studio (projects and datasets only) whose datasets service may run on ``cpus`` only: it
    sizes its pool of decoding processes to them (``decoding.cores`` reads the affinity, which
    the processes it starts inherit), as it would in a container given that many cores."""

    def __init__(self, root: Path, cpus: set[int]) -> None:
        super().__init__(root, services=("projects", "datasets"), STUDIO_LOG_LEVEL="ERROR")
        self.cpus = cpus

    def start(self, name: str, module: str | None = None, **env: str) -> None:
        super().start(name, module, **env)
        if name == "datasets":  # before its interpreter has started a thread: all inherit it
            os.sched_setaffinity(self.procs[name].pid, self.cpus)

    def check_pinned(self) -> None:
        """Every thread of the datasets service runs on ``cpus`` (else the figure would lie)."""
        pid = self.procs["datasets"].pid
        for task in Path(f"/proc/{pid}/task").iterdir():
            if os.sched_getaffinity(int(task.name)) != self.cpus:
                raise RuntimeError(f"datasets thread {task.name} is not pinned to {self.cpus}")

    def check_pool(self) -> None:
        """The datasets service decodes in one process per core it was given."""
        pool = decoding_processes(self.procs["datasets"].pid)
        if len(pool) != len(self.cpus):
            raise RuntimeError(f"{len(pool)} decoding processes on {len(self.cpus)} cores")


def decoding_processes(pid: int) -> list[int]:
    """The children of ``pid`` that multiprocessing spawned to run work (not its trackers)."""
    found = []
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


@dataclass
class Scaling:
    """Seconds per repeat of the same import with the datasets service on 1 core and on all."""

    images: int
    cores: int
    one_s: list[float] = field(default_factory=list)
    all_s: list[float] = field(default_factory=list)
    failed: bool = False

    def rates(self, seconds: list[float]) -> list[float]:
        return sorted(self.images / s for s in seconds)

    def ratios(self) -> list[float]:
        """All cores over 1 core, images/s, of each repeat's pair (run one after the other)."""
        return sorted(one / every for one, every in zip(self.one_s, self.all_s, strict=True))


#: Files imported by each stack before the measured repeats: its pool of processes starts then.
WARM_UP = 100


def scaling(images: int, repeats: int, size: int = 64, keep: bool = False) -> Scaling:
    """The same import by a studio whose datasets service runs on 1 core and by one on every
    core, on tmpfs, interleaved ``repeats`` times (which goes first alternates), each on a
    fresh set of files; each stack first imports ``WARM_UP`` files, not timed."""
    every = os.sched_getaffinity(0)
    root = Path(tempfile.mkdtemp(prefix="import-scaling-", dir=PLACES["tmpfs"]))
    stacks = {
        "1 core": PinnedStack(root / "one", {min(every)}),
        "all": PinnedStack(root / "all", every),
    }
    result = Scaling(images, len(every))
    print(f"scaling: {len(every)} cores; {2 * repeats} x {images} {size}x{size} JPEGs in {root}")
    folders = {
        name: [_set(stack.imports / f"set_{i}", images, size, 1000 * n + i) for i in range(repeats)]
        for n, (name, stack) in enumerate(stacks.items())
    }
    try:
        for stack in stacks.values():  # one after the other: two started at once did not
            stack.up(timeout=180)  # answer their first sign-in (seen on a loaded machine)
        for stack in stacks.values():
            stack.check_pinned()
        with (
            stacks["1 core"].sync_client(signed_in(stacks["1 core"]), timeout=60) as one,
            stacks["all"].sync_client(signed_in(stacks["all"]), timeout=60) as all_,
        ):
            apis = {"1 core": one, "all": all_}
            for name, api in apis.items():
                studio_import(api, _set(stacks[name].imports / "warm", WARM_UP, size, 9999), 300)
                stacks[name].check_pool()
            for r in range(repeats):
                _round(result, r, {name: (apis[name], folders[name][r]) for name in apis})
    finally:
        for stack in stacks.values():
            stack.down()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _round(result: Scaling, r: int, sides: dict[str, tuple[httpx.Client, Path]]) -> None:
    """One repeat: each side imports its fresh set, which goes first alternating."""
    order = ("1 core", "all") if r % 2 == 0 else ("all", "1 core")
    took = {}
    for name in order:
        api, folder = sides[name]
        took[name], job = studio_import(api, folder, max(300, result.images / 10))
        imported = (job.get("report") or {}).get("imported")
        result.failed |= job["state"] != "completed" or imported != result.images
    result.one_s.append(took["1 core"])
    result.all_s.append(took["all"])
    print(f"  repeat {r + 1}: 1 core {result.images / took['1 core']:.0f} img/s, all "
          f"{result.cores} cores {result.images / took['all']:.0f} img/s, "
          f"ratio {took['1 core'] / took['all']:.2f}", flush=True)  # fmt: skip


def signed_in(stack: Stack) -> str:
    """The first admin's token, waited for longer than a test waits: on a loaded machine the
    identity service of a fresh stack can take more than 30 s to answer its first sign-in."""
    return stack.sign_in(ADMIN, ADMIN_PASSWORD, timeout=180)


def _set(folder: Path, count: int, size: int, seed: int) -> Path:
    """A folder of ``count`` fresh JPEGs, read once (a warm page cache)."""
    for path in generate(folder, count, size, seed):
        path.read_bytes()
    return folder


def scaling_table(s: Scaling) -> str:
    return "\n".join([
        "| images | 1 core img/s min/med/max | all cores img/s min/med/max "
        "| all cores / 1 core per repeat min/med/max | cores |",
        "|--:|--:|--:|--:|--:|",
        f"| {s.images:,} | {spread(s.rates(s.one_s))} | {spread(s.rates(s.all_s))} "
        f"| {spread(s.ratios(), 2)} | {s.cores} |",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--where", default="tmpfs,disk", help="tmpfs, disk or both")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (stack logs)")
    parser.add_argument(
        "--scaling", action="store_true", help="only the datasets service on 1 core vs all cores"
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})")
    if args.scaling:
        scaled = scaling(args.images, args.repeats, args.size, args.keep)
        print("\n" + scaling_table(scaled))
        return 1 if scaled.failed else 0
    places = [
        measure(where, args.images, args.size, args.repeats, args.keep)
        for where in args.where.split(",")
    ]
    print("\n" + table(places))
    failed = any(p.failed for p in places)
    if failed:
        print("AN IMPORT FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

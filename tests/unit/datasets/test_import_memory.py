"""An import's commit does not grow with its size: staging 2,000 records then 10,000 and storing
the commit (planned, stamped, each event encoded as the append sends it) peaks at the same
height from a file (``spill.StagedFile``), where the records held in a list (as an import kept
them until its commit before) rise with every one. ``tests/reliability/test_flat_memory.py``
measures the whole service's peak RSS (10,000 against 100,000 images) under ``make soak``."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import msgspec

from contracts import Message
from contracts import datasets as c
from services.datasets import domain
from services.datasets.imageindex import MemoryStaged, Staged
from services.datasets.spill import StagedFile
from services.kernel.commands import stamp

D = "ds1"
REPORT = c.ImportReport(format="folder", files=0, imported=0)
#: What 8,000 more records may add to the peak of a commit from a file (they take ~4 MB).
BUDGET = 512 * 1024


def records(start: int, count: int) -> list[c.ImageRecord]:
    return [
        c.ImageRecord(
            f"{n:064x}", f"a/{n}.png", "a", 8, 8, 70, "PNG", f"{n:016x}", None, [], f"{n:064x}"
        )
        for n in range(start, start + count)
    ]


def commit_growth(
    count: int, make: Callable[[], Staged], add: Callable[[Staged, list], None]
) -> int:
    """How far the traced memory rises above where it was, while ``count`` records are staged
    (a window at a time, as decoding hands them over) and the commit is stored."""
    started = c.ImportStarted(dataset_id=D, import_id="i1", source_kind="local", source="/x",
                              format="folder")  # fmt: skip
    state = domain.evolve(domain.Dataset(), started)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    staged = make()
    for start in range(0, count, 256):
        add(staged, records(start, min(256, count - start)))
    events = stamp(domain.commit(state, D, "i1", staged, REPORT), Message(actor="test"))
    sent = sum(len(msgspec.json.encode(event)) for event in events)  # one at a time
    assert sent > count * 100
    return tracemalloc.get_traced_memory()[1] - base


def test_a_commit_from_a_staged_file_peaks_the_same_for_2000_and_10000_images(tmp_path: Path):
    files = iter(range(10))

    def on_disk() -> Staged:
        return StagedFile(tmp_path / f"{next(files)}.db")

    def in_memory() -> Staged:
        return MemoryStaged([])

    def to_file(staged: Staged, batch: list) -> None:
        staged.add(batch)  # type: ignore[attr-defined]

    def to_list(staged: Staged, batch: list) -> None:
        staged.records.extend(batch)  # type: ignore[attr-defined]

    tracemalloc.start()
    try:
        flat = [commit_growth(n, on_disk, to_file) for n in (2000, 10_000)]
        held = [commit_growth(n, in_memory, to_list) for n in (2000, 10_000)]
    finally:
        tracemalloc.stop()
    mib = [f"{g / 2**20:.2f}" for g in (*flat, *held)]
    assert flat[1] - flat[0] < BUDGET, f"from a file: {mib[0]} → {mib[1]} MiB"
    assert held[1] - held[0] > 4 * BUDGET, f"the control did not grow: {mib[2]} → {mib[3]} MiB"

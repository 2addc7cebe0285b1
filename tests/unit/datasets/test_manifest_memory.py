"""Reading an import's manifest does not grow with its number of files: a folder dataset of
2,000 then 10,000 images (in class folders of 100), read streaming into the import's staging file
(``manifestfile.ManifestFile``) and read back in order as the decoding does, peaks at about
the same traced height, where the manifest read whole (as an import read it before) rises
~1 KB a file. The walk holds one folder's listing at a time, so the images are spread over
class folders of 100, as a classification dataset is. SQLite's own pages are not Python
allocations (tracemalloc does not see them), and its cache is bounded by SQLite.
``tests/reliability/test_flat_memory.py`` measures the whole service's RSS under ``make soak``.
"""

from __future__ import annotations

import sqlite3
import sys
import tracemalloc
from pathlib import Path

import pytest

from services.datasets.formats import Box, Entry, read_manifest
from services.datasets.manifestfile import ManifestFile

#: Images per class folder: a bigger dataset has more classes of the same size, so that the
#: one folder listing the walk holds at a time is the same size in both.
PER_CLASS = 100
#: What 8,000 more files may add to the peak of a streamed read: 32 B a file (held whole, as
#: before, they add ~4-5 MB: ~600 B a file).
BUDGET = 256 * 1024


def folder_dataset(root: Path, count: int) -> Path:
    for n in range(0, count, PER_CLASS):
        folder = root / ("val" if n % (5 * PER_CLASS) == 0 else "train") / f"class{n:06d}"
        folder.mkdir(parents=True)
        for k in range(n, min(n + PER_CLASS, count)):
            (folder / f"image_{k:06d}.png").touch()
    (root / "train" / "notes.txt").touch()  # a skipped file, reported
    (root / "val" / "loose.png").touch()  # a label problem, reported
    return root


def streamed_growth(root: Path, db: sqlite3.Connection) -> tuple[int, int]:
    """How far traced memory peaks above where it was while root's manifest streams into a
    fresh table and is read back; and how many entries came back, in order."""
    db.execute("DROP TABLE IF EXISTS entries")
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    spool = ManifestFile(db)
    manifest = read_manifest(root, "auto", "classification", spool.add)
    assert manifest.entries == [] and manifest.count == spool.count
    assert len(manifest.skipped) == 1 and len(manifest.label_problems) == 1
    last, seen = "", 0
    for entry in spool.entries():
        assert entry.name > last and entry.label and entry.split in ("train", "val")
        last, seen = entry.name, seen + 1
    return tracemalloc.get_traced_memory()[1] - base, seen


def held_growth(root: Path) -> int:
    """The same, for the manifest read whole (as an import read it before)."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    manifest = read_manifest(root)
    assert manifest.count == len(manifest.entries)
    return tracemalloc.get_traced_memory()[1] - base


def test_a_streamed_folder_manifest_peaks_the_same_for_2000_and_10000_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    small = folder_dataset(tmp_path / "small", 2000)
    large = folder_dataset(tmp_path / "large", 10_000)
    db = sqlite3.connect(tmp_path / "staged.db", isolation_level=None)
    tracemalloc.start()
    try:
        # Python 3.11's pathlib interns each name of a path it makes: the interpreter's one
        # table of interned strings, sized by the whole process's strings and rebuilt (briefly
        # twice over, ~2 MB under pytest) as names come and go, at moments that vary between
        # runs; it holds no file's name past its path, so it is left out of the measure.
        monkeypatch.setattr(sys, "intern", lambda name: name)
        streamed_growth(small, db)  # first-use allocations (imports, caches) out of the way
        (flat_small, n_small), (flat_large, n_large) = (
            streamed_growth(small, db),
            streamed_growth(large, db),
        )
        held = [held_growth(small), held_growth(large)]
    finally:
        tracemalloc.stop()
        db.close()
    assert (n_small, n_large) == (2000, 10_000)
    mib = [f"{g / 2**20:.2f}" for g in (flat_small, flat_large, *held)]
    assert flat_large - flat_small < BUDGET, f"streamed: {mib[0]} → {mib[1]} MiB"
    assert held[1] - held[0] > 4 * BUDGET, f"the control did not grow: {mib[2]} → {mib[3]} MiB"


def test_the_manifest_file_gives_back_every_entry_as_it_was_in_order(tmp_path: Path):
    db = sqlite3.connect(tmp_path / "staged.db", isolation_level=None)
    spool = ManifestFile(db)
    odd = Path(b"/data/caf\xe9/x.png".decode("utf-8", "surrogateescape"))
    boxes = (Box("cat", 0.1, 0.2, 0.30000000000000004, 1.0), Box("dog", 0.0, 0.0, 0.5, 0.5))
    entries = [
        Entry(Path("/data/a/1.png"), "a/1.png", "a", "train"),
        Entry(odd, "x.png", None, None),
        Entry(Path("/data/b.jpg"), "b.jpg", "", "val", boxes),
        *(Entry(Path(f"/d/{n}.png"), f"{n}.png", "c", None) for n in range(2500)),
    ]
    spool.add(entries[:1])
    spool.add(entries[1:])
    assert list(spool.entries()) == entries and spool.count == len(entries)
    db.close()

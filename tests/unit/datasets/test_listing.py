"""The walk of a source holds a large folder's names on disk, not in memory
(``formats.listing``): a flat class folder of 4,000 files peaks where one of 1,000 does (its
names held in a list, as before, rise ~66 B a file), and a listing sorted on disk gives the
walk's order exactly as a listing sorted in memory does, whatever the names."""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path

import pytest

from services.datasets.formats import listing
from services.datasets.formats.manifest import Problem
from services.datasets.formats.tree import walk

#: What 3,000 more names in one folder may add to the walk's peak (held: ~200 KB).
BUDGET = 64 * 1024


def flat_folder(root: Path, count: int) -> Path:
    folder = root / "cats"
    folder.mkdir(parents=True)
    for n in range(count):
        (folder / f"image_{n:06d}.png").touch()
    return root


def walk_growth(root: Path) -> tuple[int, int]:
    """How far traced memory peaks above where it was while root is walked; and how many files
    it gave, in name order."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    last, seen = "", 0
    for item in walk(root):
        assert not isinstance(item, Problem) and item.name > last
        last, seen = item.name, seen + 1
    return tracemalloc.get_traced_memory()[1] - base, seen


def test_walking_a_flat_folder_of_4000_files_peaks_where_one_of_1000_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(listing, "HELD", 250)
    monkeypatch.setattr(listing, "PAGE", 250)
    small, large = flat_folder(tmp_path / "small", 1000), flat_folder(tmp_path / "large", 4000)
    # pathlib interns each name it makes a path of: the interpreter's one table, resized at
    # moments that vary between runs; a name read back from disk is held only by its path.
    monkeypatch.setattr(sys, "intern", lambda name: name)
    tracemalloc.start()
    try:
        walk_growth(small)  # first-use allocations out of the way
        (flat_small, n_small), (flat_large, n_large) = walk_growth(small), walk_growth(large)
        monkeypatch.setattr(listing, "HELD", 1_000_000)  # the control: every name in a list
        held = [walk_growth(small)[0], walk_growth(large)[0]]
    finally:
        tracemalloc.stop()
    assert (n_small, n_large) == (1000, 4000)
    kib = [f"{g / 1024:.0f}" for g in (flat_small, flat_large, *held)]
    assert flat_large - flat_small < BUDGET, f"on disk: {kib[0]} -> {kib[1]} KiB"
    assert held[1] - held[0] > 2 * BUDGET, f"the control did not grow: {kib[2]} -> {kib[3]} KiB"


def odd_tree(root: Path) -> Path:
    """Names whose order is easy to get wrong: a file and a folder of one name, a suffix
    against a folder, non-BMP and private-use characters, and a name that is not UTF-8."""
    for folder in ("a", "a.b", "z", "é", "ü/inner"):
        (root / folder).mkdir(parents=True)
    names = ["a.png", "a-.png", "a0.png", "b.png", "\U0001f600.png", "\ue000.png", "\ufffd.png",
             "Z.png", "a/x.png", "a.b/y.png", "é/1.png", "ü/inner/2.png", "z/3.png"]  # fmt: skip
    for name in names:
        (root / name).touch()
    with open(os.fsencode(root) + b"/caf\xe9.png", "wb"):  # not UTF-8: refused, in its place
        pass
    return root


def test_a_listing_sorted_on_disk_walks_in_the_order_of_one_sorted_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = odd_tree(tmp_path / "src")
    in_memory = [str(item) for item in walk(root)]
    monkeypatch.setattr(listing, "HELD", 2)  # every folder of more than one entry on disk
    monkeypatch.setattr(listing, "PAGE", 3)

    on_disk = [str(item) for item in walk(root)]

    assert on_disk == in_memory and len(in_memory) == 14
    names = [item.file if isinstance(item, Problem) else item.name for item in walk(root)]
    assert names[:3] == ["Z.png", "a-.png", "a.b/y.png"] and names[-1] == "\U0001f600.png"
    assert "caf\ufffd.png" in names  # refused (not UTF-8), shown in its place

"""A dataset is folded from the real stream a page of events at a time (``folding.PAGE_BYTES``),
never the rest of its events at once: an ordered consumer used to push them all into the
client's queue while the fold was still writing the first, so folding an import of 100 batches
held all 100 (~36 MB for 100,000 images). Here the fold's peak of traced memory is the same for
8 and 32 batches, and what it folds is every event, in order, across page boundaries.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from contracts import Message
from contracts import datasets as c
from services.datasets import folding
from services.datasets.folding import FoldingRepository
from services.datasets.spill import IndexFile
from services.kernel.commands import stamp
from services.kernel.eventstore import EventStore
from services.kernel.streams import StreamSpec, ensure_stream

pytestmark = pytest.mark.integration
#: Records per ImagesAdded event: ~100 KB of JSON each.
RECORDS = 400


def batch(dataset_id: str, n: int) -> c.ImagesAdded:
    ids = [f"{n:032x}{i:032x}" for i in range(RECORDS)]
    images = [
        c.ImageRecord(id, f"a/{n}-{i}.png", "a", 8, 8, 70, "PNG", f"{i:016x}", None, [], id)
        for i, id in enumerate(ids)
    ]
    return c.ImagesAdded(dataset_id=dataset_id, import_id="i1", images=images)


async def stored(nc: NATS, dataset_id: str, batches: int) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    events: EventStore[c.Event] = EventStore(
        nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    started = c.ImportStarted(dataset_id=dataset_id, import_id="i1", source_kind="local",
                              source="/x", format="folder")  # fmt: skip
    await events.append(dataset_id, stamp([started], Message(actor="t")), 0)
    for n in range(batches):  # one append each: never a batch of them in memory here
        version = await events.version(dataset_id)
        await events.append(dataset_id, stamp([batch(dataset_id, n)], Message(actor="t")), version)
    return events


async def fold_peak(repo: FoldingRepository, dataset_id: str) -> int:
    """How far the traced memory rises while the dataset is folded."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    await repo.load(dataset_id)
    return tracemalloc.get_traced_memory()[1] - base


async def test_folding_holds_a_page_of_events_however_many_the_dataset_has(
    nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(folding, "PAGE_BYTES", 256 * 1024)  # two or three events a page
    small, large = await stored(nc, "small", 8), await stored(nc, "large", 32)
    repo = FoldingRepository(small, IndexFile(tmp_path / "index.db"), nc.jetstream())
    tracemalloc.start()
    try:
        peaks = [await fold_peak(repo, "small"), await fold_peak(repo, "large")]
    finally:
        tracemalloc.stop()
    assert repo.folded == 9 + 33
    # 24 more events are ~2.4 MB of JSON: holding them would show; a page more or less would not
    assert peaks[1] - peaks[0] < 600 * 1024, peaks
    state, position, version = await repo.load("large")
    assert (len(state.images), version) == (32 * RECORDS, 33)
    assert position == await large.version("large")
    assert state.images[f"{31:032x}{399:032x}"].filename == "a/31-399.png"


async def test_a_fold_of_one_event_a_page_folds_every_event_in_order(
    nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(folding, "PAGE_BYTES", 1)  # each page holds its first event only
    events = await stored(nc, "d1", 3)
    other = await stored(nc, "d2", 2)  # interleaved in the stream: not part of d1's pages
    relabel = c.ImageRelabeled(dataset_id="d1", image_id=f"{0:032x}{5:032x}", label="b",
                               previous="a")  # fmt: skip
    await events.append("d1", stamp([relabel], Message(actor="t")), await events.version("d1"))
    repo = FoldingRepository(events, IndexFile(tmp_path / "index.db"), nc.jetstream())

    state, position, version = await repo.load("d1")

    assert (version, len(state.images), repo.folded) == (5, 3 * RECORDS, 5)
    assert state.images[f"{0:032x}{5:032x}"].label == "b"
    assert position == await events.version("d1") and position > await other.version("d2")

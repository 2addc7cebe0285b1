"""The garbage collector against a real datasets stream (``gc.Collector``), step by step: it
deletes nothing while an import runs, never a file an event names (a deleted image's
included), and only files older than the grace period."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from contracts import Message
from contracts import datasets as d
from services.datasets.gc import Collector
from services.kernel.blobstore import BlobStore
from services.kernel.commands import stamp
from services.kernel.eventstore import EventStore
from services.kernel.streams import StreamSpec, ensure_stream

pytestmark = pytest.mark.integration
D = "ds1"
OLD = time.time() - 3600


def stored(store: BlobStore, name: str, age: float = OLD) -> str:
    sha = hashlib.sha256(name.encode()).hexdigest()
    store.put_bytes(name.encode(), sha)
    store.put_thumb(sha, b"thumb")
    for path in (store.blob_path(sha), store.thumb_path(sha)):
        os.utime(path, (age, age))
    return sha


def record(sha: str) -> d.ImageRecord:
    return d.ImageRecord(sha, "a/x.png", "a", 8, 8, 10, "PNG", "0" * 16)


async def test_the_collector_holds_off_while_an_import_runs_and_spares_every_named_file(
    nc: NATS, tmp_path: Path
):
    js = nc.jetstream()
    await ensure_stream(js, StreamSpec(d.STREAM, (d.EVENTS,)))
    events: EventStore[d.Event] = EventStore(
        nc, stream=d.STREAM, subject=d.event_subject, event_type=d.Event
    )
    store = BlobStore(tmp_path / "blobs")
    kept, dropped, orphan = (stored(store, n) for n in ("kept", "dropped", "orphan"))
    young = stored(store, "young", age=time.time())
    collector = Collector(js, store, tmp_path / "gc.db")

    async def append(*decided: d.Event) -> None:
        cause = Message(actor="test")  # ids of its own: each append is a new one
        await events.append(D, stamp(list(decided), cause), await events.version(D))

    # while an import runs, a collection lists what it would delete but deletes nothing
    await append(d.ImportStarted(dataset_id=D, import_id="i1", source_kind="local",
                                 source="/x", format="folder"))  # fmt: skip
    running = await collector.collect(d.CollectGarbage(delete=True, grace_s=60))
    assert "1 import(s) running (i1)" in running.deferred and not running.deleted
    assert (running.files, running.thumbnails, running.recent) == (3, 3, 2)  # young: kept
    assert all(store.has(sha) for sha in (kept, dropped, orphan, young))

    # once it committed two of them (one deleted since), only the orphan goes
    await append(
        d.ImagesAdded(dataset_id=D, import_id="i1", images=[record(kept), record(dropped)]),
        d.ImportCompleted(dataset_id=D, import_id="i1",
                          report=d.ImportReport(format="folder", files=2, imported=2)),
    )  # fmt: skip
    await append(d.ImageDeleted(dataset_id=D, image_id=dropped))
    done = await collector.collect(d.CollectGarbage(delete=True, grace_s=60))

    assert done.deleted and not done.deferred and (done.files, done.thumbnails) == (1, 1)
    assert done.sample == [orphan] and done.named == 2
    assert not store.has(orphan) and not store.has_thumb(orphan)
    assert all(store.has(s) and store.has_thumb(s) for s in (kept, dropped, young))


def test_a_damaged_gc_file_is_replaced_and_folded_again(tmp_path: Path):
    (tmp_path / "gc.db").write_bytes(b"not a database" * 100)
    collector = Collector(None, BlobStore(tmp_path / "blobs"), tmp_path / "gc.db")  # type: ignore[arg-type]
    assert collector.db.execute("SELECT count(*) FROM named").fetchone() == (0,)

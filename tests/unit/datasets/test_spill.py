"""What an import read and a dataset's image index, kept in SQLite (``spill``) instead of memory:
they decide exactly as the in-memory forms do, a commit reads its records only as its events
are stored, and a dataset's fold resumes where it stopped (``folding``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import common
from contracts import datasets as c
from services.datasets import domain
from services.datasets.folding import FoldingRepository
from services.datasets.imageindex import IMAGES_PER_EVENT, MemoryIndex, MemoryStaged
from services.datasets.spill import IndexFile, StagedFile
from services.kernel.commands import execute, stamp
from services.kernel.domain import DomainError
from services.kernel.memstore import InMemoryEventStore
from tests.unit.datasets.test_dataset_decider import REPORT, record, started

D = "ds1"


def _records() -> list[c.ImageRecord]:
    """Five images, one twice in the import (other label), one the dataset has already."""
    twin = c.ImageRecord(**{**_fields(record(2)), "filename": "dog/2b.png", "label": "dog"})
    return [record(1), record(2), twin, record(3), record(9), record(2)]


def _fields(r: c.ImageRecord) -> dict:
    return {f: getattr(r, f) for f in r.__struct_fields__}


@pytest.fixture
def index(tmp_path: Path) -> IndexFile:
    return IndexFile(tmp_path / "index.db")


def test_a_staged_file_plans_like_the_list_it_replaces(tmp_path: Path, index: IndexFile):
    known = index.index(D).with_added([record(9, label="bird")])
    staged = StagedFile(tmp_path / "i1.db")
    staged.add(_records()[:3])
    staged.add(_records()[3:])

    on_disk = staged.plan(known)
    in_memory = MemoryStaged(_records()).plan(MemoryIndex(dict(known.items())))

    assert on_disk == in_memory
    kept, duplicates = on_disk
    assert kept == 3 and [d.kept_label for d in duplicates] == ["cat", "bird", "cat"]
    assert [r.image_id for r in staged.kept(0, 10)] == [record(n).image_id for n in (1, 2, 3)]
    assert staged.plan(known) == on_disk  # planned again (a retried decision): the same
    assert len(staged.kept(1, 3)) == 2
    staged.close()
    assert not (tmp_path / "i1.db").exists()


def test_the_sqlite_index_folds_events_like_the_memory_one(index: IndexFile):
    events: list[c.Event] = [
        c.ImagesAdded(dataset_id=D, import_id="i1", images=[record(n) for n in range(5)]),
        c.ImageRelabeled(dataset_id=D, image_id=record(1).image_id, label="dog", previous="cat"),
        c.ImageDeleted(dataset_id=D, image_id=record(3).image_id),
    ]
    on_disk, in_memory = domain.Dataset(images=index.index(D)), domain.Dataset()
    for event in events:
        on_disk, in_memory = domain.evolve(on_disk, event), domain.evolve(in_memory, event)

    assert list(on_disk.images.items()) == list(in_memory.images.items())
    assert len(on_disk.images) == 4 and record(3).image_id not in on_disk.images
    assert on_disk.images[record(1).image_id].label == "dog"
    assert len(index.index("another")) == 0


def test_a_commit_reads_its_records_only_as_its_events_are_read(tmp_path: Path):
    class Counting(StagedFile):
        reads = 0

        def kept(self, start: int, stop: int) -> list[c.ImageRecord]:
            self.reads += 1
            return super().kept(start, stop)

    staged = Counting(tmp_path / "i1.db")
    staged.add([record(n) for n in range(2 * IMAGES_PER_EVENT + 1)])
    state = domain.evolve(domain.Dataset(), started())

    events = stamp(domain.commit(state, D, "i1", staged, REPORT), c.StartImport(
        dataset_id=D, import_id="i1", source_kind="local", source="/x"))  # fmt: skip

    assert len(events) == 4 and staged.reads == 0  # nothing read yet: three batches to come
    assert len(events[1].images) == IMAGES_PER_EVENT and staged.reads == 1
    assert events[-1].report.imported == 2 * IMAGES_PER_EVENT + 1 and staged.reads == 1
    assert events[1].message_id == events[1].message_id and events[1].message_id.endswith("-1")
    staged.close()


def _store() -> InMemoryEventStore[c.Event]:
    return InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


async def _apply(repo: FoldingRepository, event: c.Event) -> None:
    reply = await execute(repo, D, c.DeleteImage(dataset_id=D, image_id="x"), lambda _: [event],
                          headers={}, refusals=(DomainError,))  # fmt: skip
    assert isinstance(reply, common.CommandAccepted), reply


async def test_a_dataset_is_folded_once_and_resumed_from_the_index_after_a_restart(
    tmp_path: Path,
):
    store = _store()
    first = FoldingRepository(store, IndexFile(tmp_path / "index.db"))  # type: ignore[arg-type]
    await _apply(first, started())
    await _apply(first, c.ImagesAdded(dataset_id=D, import_id="i1", images=[record(1)]))
    state, _, version = await first.load(D)
    assert (version, len(state.images), state.imports) == (2, 1, {"i1": "running"})
    assert first.folded == 2

    # a new process on the same folder: only what was stored since is folded
    again = FoldingRepository(store, IndexFile(tmp_path / "index.db"))  # type: ignore[arg-type]
    await _apply(again, c.ImagesAdded(dataset_id=D, import_id="i1", images=[record(2)]))
    state, _, version = await again.load(D)
    assert (version, len(state.images), state.imports) == (3, 2, {"i1": "running"})
    assert again.folded == 1


async def test_a_damaged_index_file_is_replaced_and_rebuilt_from_the_events(tmp_path: Path):
    store = _store()
    path = tmp_path / "index.db"
    repo = FoldingRepository(store, IndexFile(path))  # type: ignore[arg-type]
    await _apply(repo, c.ImagesAdded(dataset_id=D, import_id="i1", images=[record(1)]))
    repo.index.close()
    path.write_bytes(b"not a database" * 100)
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)

    rebuilt = FoldingRepository(store, IndexFile(path))  # type: ignore[arg-type]
    state, _, version = await rebuilt.load(D)

    assert (version, list(state.images)) == (1, [record(1).image_id])


async def test_a_committed_import_is_folded_into_the_index_before_its_job_ends(tmp_path: Path):
    import uuid

    from services.datasets import sources
    from services.datasets.importer import Importer, Job
    from services.kernel.blobstore import BlobStore
    from tests import imagesets

    store = _store()
    repo = FoldingRepository(store, IndexFile(tmp_path / "index.db"))  # type: ignore[arg-type]
    command = c.StartImport(dataset_id=D, import_id=uuid.uuid4().hex, source_kind="local",
                            source="/x", format="folder")  # fmt: skip
    await _apply(repo, domain.start(domain.Dataset(), command, "me")[0])

    async def publish(job: Job) -> None:
        return None

    importer = Importer(BlobStore(tmp_path / "blobs"), repo, publish, instance="me",
                        zip_limits=sources.ZipLimits(), spill=tmp_path / "spill")  # fmt: skip
    root = imagesets.folder(tmp_path / "src", {"a": 2, "b": 1})
    await importer.start(Job(command=command, root=root))

    # the next command finds nothing left to fold: the job folded its own commit
    folded = repo.folded
    state, _, _ = await repo.load(D)
    assert repo.folded == folded and len(state.images) == 3
    assert list((tmp_path / "spill").iterdir()) == []  # its staging file is gone

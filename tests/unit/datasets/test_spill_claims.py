"""Two datasets instances on one workspace: a sweep removes what a dead process left, never what
a live one uses (``claims``): the staging files of running imports (``spill``) and the folders
of uploads (``handlers``), whichever instance runs them. Shown with two importers in one process
on one folder, and with a real process that holds a staging file and is then SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any, cast

from contracts import datasets as c
from services.datasets import domain, sources
from services.datasets.claims import Claim, sweep
from services.datasets.decoding import Decoder, Result
from services.datasets.handlers import Datasets
from services.datasets.importer import Importer, Job
from services.datasets.spill import StagedFile
from services.kernel.blobstore import BlobStore
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from tests import imagesets


class HeldDecoder(Decoder):
    """Decodes as the service does, once ``go`` is set: the import waits, mid-way, meanwhile."""

    def __init__(self, store: BlobStore) -> None:
        super().__init__(store, workers=1)
        self.decoding, self.go = threading.Event(), threading.Event()

    def decode(
        self, paths: Iterable[Path], cancelled: Callable[[], bool]
    ) -> Generator[Result, None, None]:
        self.decoding.set()
        self.go.wait(30)
        yield from super().decode(paths, cancelled)


def instance(tmp_path: Path, name: str, store: InMemoryEventStore[c.Event]) -> Importer:
    """One datasets instance's importer, on the workspace every instance shares."""

    async def publish(job: Job) -> None:
        return None

    repo = Repository(store, domain.evolve, domain.Dataset())
    return Importer(BlobStore(tmp_path / "blobs", durable=False), repo, publish, instance=name,
                    zip_limits=sources.ZipLimits(), spill=tmp_path / "spill")  # fmt: skip


async def test_a_sweep_keeps_a_running_import_of_another_instance_and_takes_a_dead_ones(
    tmp_path: Path,
):
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    a, b = instance(tmp_path, "a", store), instance(tmp_path, "b", store)
    held = a.decoder = HeldDecoder(a.decoder.store)
    # given instance a running an import, its staging file on the shared workspace
    command = c.StartImport(dataset_id="d1", import_id=uuid.uuid4().hex, source_kind="local",
                            source="/x", format="folder")  # fmt: skip
    await store.append("d1", domain.start(domain.Dataset(), command, "a"), 0)
    task = a.start(Job(command=command, root=imagesets.folder(tmp_path / "src", {"x": 2})))
    assert await asyncio.to_thread(held.decoding.wait, 30)
    live = a.spill / f"{command.import_id}.db"
    # and the staging file a crashed process left there
    (a.spill / "dead.db").write_bytes(b"left by a crash")
    # when instance b starts and sweeps the staging files
    removed = b.sweep_spill()
    # then the dead process's file goes, and a's live one stays
    assert removed == ["dead"]
    assert live.exists()
    # and a's import commits whole, leaving nothing behind
    held.go.set()
    await task
    assert isinstance(store.events()[-1].event, c.ImportCompleted)
    assert store.events()[-1].event.report.imported == 2  # type: ignore[union-attr]
    assert list(a.spill.iterdir()) == []


HOLDER = """
import sys, time
from pathlib import Path
from services.datasets.spill import StagedFile
staged = StagedFile(Path(sys.argv[1]))
print("holding", flush=True)
time.sleep(600)
"""


def test_a_staging_file_is_kept_while_its_process_lives_and_swept_once_it_is_killed(
    tmp_path: Path,
):
    # given a real process holding an import's staging file
    spill = tmp_path / "spill"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(spill / "i1.db")],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        # when another process sweeps, then the file stays
        assert sweep(spill, ".db") == []
        assert (spill / "i1.db").exists()
        # when the holder is SIGKILLed (no cleanup at all)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # then the next sweep removes its file and its lock
        assert sweep(spill, ".db") == ["i1"]
        assert list(spill.iterdir()) == []
    finally:
        proc.kill()
        proc.wait()


def test_a_claim_has_one_holder_and_its_file_goes_with_its_release(tmp_path: Path):
    lock = tmp_path / "i1.lock"
    first = Claim.take(lock)
    assert first is not None
    assert Claim.take(lock) is None  # another taker, even in this process
    first.release()
    assert not lock.exists()
    again = Claim.take(lock)
    assert again is not None and lock.exists()
    again.release()


def test_a_staging_file_waits_for_a_sweep_holding_its_name_then_starts_afresh(tmp_path: Path):
    # given a sweeper that holds the claim of a dead import's leftover
    path = tmp_path / "i1.db"
    path.write_bytes(b"left by a crash")
    sweeping = Claim.take(tmp_path / "i1.lock")
    assert sweeping is not None
    # when the import of that id starts meanwhile, then it waits for the sweep
    made: list[StagedFile] = []
    starting = threading.Thread(target=lambda: made.append(StagedFile(path)))
    starting.start()
    starting.join(0.2)
    assert not made
    path.unlink()
    sweeping.release()
    starting.join(30)
    # and then holds a claim of its own on a new, empty file
    (staged,) = made
    assert staged.count == 0 and Claim.take(tmp_path / "i1.lock") is None
    staged.close()
    assert list(tmp_path.iterdir()) == []


def upload_command(path: Path, import_id: str) -> c.StartImport:
    return c.StartImport(dataset_id="p1", import_id=import_id, source_kind="upload",
                         source="set.zip", staged_path=str(path))  # fmt: skip


def test_a_restart_of_one_instance_keeps_the_upload_folder_another_instance_fills(
    tmp_path: Path,
):
    def service(name: str) -> Datasets:
        return Datasets(cast(Any, None), None, instance=name, import_roots=[],
                        uploads=tmp_path / "uploads", staging=tmp_path / "staging")  # fmt: skip

    a, b = service("a"), service("b")
    # given instance a taking an upload (its archive in its own staging folder, being read),
    # before its import is stored: no read model names it yet
    (tmp_path / "uploads").mkdir()
    archive = imagesets.zip_dir(imagesets.folder(tmp_path / "src", {"x": 1}),
                                tmp_path / "uploads" / "a.zip")  # fmt: skip
    job = a._job(upload_command(archive, "up1"))
    # and a folder a crashed process left
    (b.staging / "crashed" / "files").mkdir(parents=True)
    # when instance b starts and reaps the staging area, then only the dead one's folder goes
    assert asyncio.run(b.reap_staging(keep=set())) == ["crashed"]
    assert job.archive is not None and job.archive.is_file()
    # nor does a reaper's cleanup of that import take it while a holds it
    asyncio.run(b.clear_staging("up1"))
    assert job.archive.is_file()
    # and once a's job ends, nothing of it is left
    job.drop_staging()
    assert list(a.staging.iterdir()) == []

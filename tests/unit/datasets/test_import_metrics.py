"""The datasets service's import metrics, from a real import job on an in-memory store: files
are counted by what became of each as it is processed, bytes as images are kept, and an
import's outcome, duration and the running gauge once it has ended."""

from __future__ import annotations

import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from contracts import datasets as c
from services.datasets import domain, metrics, sources
from services.datasets.importer import Importer, Job
from services.kernel.blobstore import BlobStore
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from tests import imagesets

ME = "datasets-a"


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    return {
        "imported": count("studio_import_files_total", outcome="imported"),
        "skipped": count("studio_import_files_total", outcome="skipped"),
        "failed": count("studio_import_files_total", outcome="failed"),
        "bytes": count("studio_import_bytes_total"),
        "committed": count("studio_imports_total", outcome="committed"),
        "cancelled": count("studio_imports_total", outcome="cancelled"),
        "seconds": count("studio_import_seconds_count"),
        "running": count("studio_imports_running"),
    }


async def run_import(tmp_path: Path, root: Path, *, cancel: bool = False) -> list[c.Event]:
    """Runs one import of ``root`` to its end, as the service does; returns the stored events."""
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    datasets = Repository(store, domain.evolve, domain.Dataset())
    command = c.StartImport(
        dataset_id=uuid.uuid4().hex, import_id=uuid.uuid4().hex, source_kind="local",
        source=str(root), format="folder",
    )  # fmt: skip
    await store.append(command.dataset_id, domain.start(domain.Dataset(), command, ME), 0)

    async def publish(job: Job) -> None:
        return None

    importer = Importer(
        BlobStore(tmp_path / "blobs", durable=False), datasets, publish,
        instance=ME, zip_limits=sources.ZipLimits(), workers=2,
    )  # fmt: skip
    job = Job(command=command, root=root)
    if cancel:
        job.cancel.set()
    await importer.start(job)
    return [s.event for s in await store.load(command.dataset_id)]


def test_the_labelled_counters_exist_at_zero_before_any_import():
    for outcome in metrics.FILE_OUTCOMES:
        assert (
            REGISTRY.get_sample_value("studio_import_files_total", {"outcome": outcome}) is not None
        )
    for outcome in metrics.IMPORT_OUTCOMES:
        assert REGISTRY.get_sample_value("studio_imports_total", {"outcome": outcome}) is not None


async def test_an_import_counts_each_file_by_its_outcome_and_ends_committed(tmp_path: Path):
    # given a folder of 3 good images, one corrupt file and one that is no image
    root = imagesets.folder(tmp_path / "src", {"cat": 2, "dog": 1})
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image")
    sizes = sum(p.stat().st_size for p in root.rglob("*_*.png"))
    before = snapshot()
    # when it is imported
    events = await run_import(tmp_path, root)
    # then it committed, and every file was counted by what became of it
    assert isinstance(events[-1], c.ImportCompleted), events[-1]
    after = snapshot()
    assert after["imported"] - before["imported"] == 3
    assert after["failed"] - before["failed"] == 1
    assert after["skipped"] - before["skipped"] >= 1
    assert after["bytes"] - before["bytes"] == sizes
    assert after["committed"] - before["committed"] == 1
    assert after["seconds"] - before["seconds"] == 1
    assert after["running"] == before["running"]


async def test_a_cancelled_import_ends_counted_as_cancelled(tmp_path: Path):
    root = imagesets.folder(tmp_path / "src", {"cat": 2})
    before = snapshot()
    events = await run_import(tmp_path, root, cancel=True)
    assert isinstance(events[-1], c.ImportFailed) and events[-1].code == "CANCELLED"
    after = snapshot()
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["imported"] == before["imported"]
    assert after["running"] == before["running"]


def test_the_running_gauge_counts_imports_between_start_and_end():
    running = count("studio_imports_running")
    metrics.import_started()
    assert count("studio_imports_running") == running + 1
    metrics.import_ended("failed", 1.5)
    assert count("studio_imports_running") == running

"""An import's report stays bounded, whatever its source holds: each list keeps its first
``REPORT_LISTED`` files (within ``REPORT_LIST_BYTES``) and its total counts them all, so the
``ImportCompleted`` that carries it fits in one NATS message (8 MB) and the import commits."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import msgspec

from contracts import datasets as c
from services.datasets import domain, sources
from services.datasets.importer import Importer, Job
from services.kernel.blobstore import BlobStore
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from studio_client.cli.commands import data
from studio_client.cli.output import Output
from studio_client.models import Import
from tests import imagesets

#: nats-server's ``max_payload`` as the studio configures it (``kernel.nats_server``).
MAX_PAYLOAD = 8 * 1024 * 1024
#: A folder nested deep enough that each file's path is ~3,300 characters long.
DEEP = tuple(letter * 250 for letter in "abcdefghijklm")


def stray_files(root: Path, count: int) -> Path:
    """``count`` text files (not images: each one skipped) in a deep folder of ``root``, with
    paths so long that listing them all takes ~3.3 KB each (made by descriptor: a long path is
    resolved once, not once per file)."""
    folder = root.joinpath("notes", *DEEP)
    folder.mkdir(parents=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        for n in range(count):
            os.close(os.open(f"note{n:05d}.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return root


async def run_import(tmp_path: Path, root: Path) -> list[c.Event]:
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    command = c.StartImport(dataset_id="d1", import_id=uuid.uuid4().hex, source_kind="local",
                            source=str(root), format="folder")  # fmt: skip
    await store.append("d1", domain.start(domain.Dataset(), command, "me"), 0)

    async def publish(job: Job) -> None:
        return None

    importer = Importer(BlobStore(tmp_path / "blobs", durable=False),
                        Repository(store, domain.evolve, domain.Dataset()), publish,
                        instance="me", zip_limits=sources.ZipLimits(), workers=1)  # fmt: skip
    await importer.start(Job(command=command, root=root))
    return [s.event for s in await store.load("d1")]


async def test_a_folder_of_thousands_of_stray_files_commits_with_a_bounded_report(
    tmp_path: Path,
):
    # given a folder of two images and 1,200 files that are no images, with very long paths
    # (3,000 of them, listed whole, would make a report of ~10 MB, more than NATS carries:
    # ``tests/reliability/test_import_kills.py`` imports that many through a real server)
    root = imagesets.folder(tmp_path / "src", {"cat": 2})
    stray_files(root, 1200)
    # when it is imported
    events = await run_import(tmp_path, root)
    # then it commits, its completion small enough for NATS
    done = events[-1]
    assert isinstance(done, c.ImportCompleted), done
    assert len(msgspec.json.encode(done)) < MAX_PAYLOAD / 2
    # and its report lists the first skipped files and counts every one
    report = done.report
    assert report.imported == 2 and report.files == 1202
    assert report.skipped_total == 1200
    assert 0 < len(report.skipped) <= c.REPORT_LISTED
    assert all(p.reason.startswith("unsupported file type") for p in report.skipped)
    assert report.corrupt_total == report.label_problems_total == report.duplicates_total == 0


def test_an_import_of_many_copies_lists_the_first_duplicates_and_counts_them_all():
    # given an import of 1,500 copies of one file
    record = c.ImageRecord(image_id="a" * 64, filename="x.png", label="cat", width=1, height=1,
                           size=1, format="PNG", phash="0")  # fmt: skip
    copies = [msgspec.structs.replace(record, filename=f"x{n}.png") for n in range(1500)]
    started = c.ImportStarted(dataset_id="d1", import_id="i1", source_kind="local",
                              source="/x", format="folder", instance="me")  # fmt: skip
    state = domain.evolve(domain.Dataset(), started)
    report = c.ImportReport(format="folder", files=1500, imported=1500)
    # when it commits
    events = domain.commit(state, "d1", "i1", copies, report)
    # then one image is kept, and the report lists 1,000 of its 1,499 duplicates
    done = events[-1]
    assert isinstance(done, c.ImportCompleted)
    assert done.report.imported == 1
    assert done.report.duplicates_total == 1499 and len(done.report.duplicates) == 1000
    assert done.report.duplicates[0].file == "x1.png"


def test_a_report_is_bounded_in_bytes_and_one_from_before_the_totals_counts_its_lists():
    # given problems whose reasons are huge (a manifest's label can be any text)
    huge = [c.FileProblem(f"f{n}.png", "label " + "x" * 300_000) for n in range(10)]
    report = c.ImportReport(format="csv", files=10, imported=0, label_problems=huge)
    # then the report lists as many as fit in its byte bound, and counts all ten
    assert report.label_problems_total == 10
    assert 0 < len(report.label_problems) < 10
    assert len(msgspec.json.encode(report.label_problems)) <= c.REPORT_LIST_BYTES
    # and a report stored before the totals existed reads with totals that count its lists
    old = b'{"format":"folder","files":3,"imported":1,"skipped":[{"file":"a","reason":"r"}]}'
    decoded = msgspec.json.decode(old, type=c.ImportReport)
    assert decoded.skipped_total == 1 and decoded.corrupt_total == 0


def test_the_command_line_says_the_totals_of_a_bounded_report(capsys):
    # given a completed import whose report lists 1,000 of its 300,000 skipped files
    skipped = [
        {"file": f"junk/{n}.txt", "reason": "unsupported file type .txt"} for n in range(1000)
    ]
    report = {"format": "folder", "files": 300_002, "imported": 2, "seconds": 1.0,
              "skipped": skipped, "skipped_total": 300_000}  # fmt: skip
    job = Import(id="i1", project_id="p1", state="completed", report=report)
    # when ``studio import`` shows it
    data._report(Output(), job)
    # then it counts every skipped file, and how many it does not show
    said = " ".join(capsys.readouterr().out.split())
    assert "300000 skipped" in said and "and 299990 more" in said


def test_a_datasets_state_counts_every_duplicate_and_unreadable_file_of_its_imports():
    # given two imports whose reports list fewer files than they found
    state = domain.Dataset()
    for n, (dups, bad) in enumerate(((1499, 3), (10, 2000))):
        report = c.ImportReport(format="folder", files=1, imported=0, duplicates_total=dups,
                                corrupt_total=bad)  # fmt: skip
        done = c.ImportCompleted(dataset_id="d1", import_id=f"i{n}", report=report)
        state = domain.evolve(state, done)
    # then the state (which the health report reads) counts them all
    assert state.duplicates_total == 1509 and state.corrupt_total == 2003

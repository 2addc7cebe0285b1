"""An import job: unpack or locate the source, read its manifest, decode every image, report.

Runs in the datasets service's event loop, with the blocking work (ZIP extraction, Pillow,
hashing) in threads. It decides nothing and stores no event itself: it hands its outcome to
the ``Outcome`` port (validated, committed or failed) and its progress to a live publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from contracts import common
from contracts import datasets as c
from services.datasets import formats, sources
from services.datasets.imaging import CorruptImage, ImageInfo, inspect
from services.kernel.blobstore import BlobStore

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
#: Files handed to the decoding threads at a time.
WINDOW = 256


class Outcome(Protocol):
    async def validated(self, job: Job, manifest: formats.Manifest) -> None: ...

    async def commit(
        self, job: Job, records: list[c.ImageRecord], report: c.ImportReport
    ) -> None: ...

    async def failed(
        self, job: Job, code: str, message: str, status: int, field: str | None
    ) -> None: ...


class Cancelled(Exception):
    pass


@dataclass
class Job:
    command: c.StartImport
    #: Where the source's files are: a local folder, or a staging folder for an upload.
    root: Path
    #: An upload's own folder (its archive and ``root``), removed whole when the job ends.
    staging: Path | None = None
    #: An upload's archive, extracted into ``root`` and deleted once extracted.
    archive: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: The starting command's trace headers, carried on to the job's outcome.
    headers: Mapping[str, str] = field(default_factory=dict)
    phase: str = "starting"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def import_id(self) -> str:
        return self.command.import_id

    def progress(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed if self.phase == "decoding" else 0.0
        left = (self.total - self.done) / rate if rate else None
        return {
            "import_id": self.import_id,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "rate": round(rate, 1),
            "eta_s": round(left, 1) if left is not None else None,
        }


class Importer:
    def __init__(
        self,
        store: BlobStore,
        outcome: Outcome,
        publish: Callable[[Job], Awaitable[None]],
        *,
        zip_limits: sources.ZipLimits,
        workers: int = 0,
    ) -> None:
        self._store = store
        self._outcome = outcome
        self._publish = publish
        self._zip_limits = zip_limits
        self._workers = workers or min(8, (os.cpu_count() or 2) + 1)
        self.jobs: dict[str, Job] = {}

    async def run(self, job: Job) -> None:
        self.jobs[job.import_id] = job
        reporter = asyncio.create_task(self._report(job))
        try:
            await self._run(job)
        except Cancelled:
            await self._outcome.failed(job, "CANCELLED", "the import was cancelled", 409, None)
        except sources.SourceError as err:
            await self._outcome.failed(job, err.code, err.message, err.status, err.field)
        except Exception as exc:
            log.exception("import %s failed", job.import_id)
            message = f"the import failed unexpectedly: {type(exc).__name__}: {exc}"
            await self._outcome.failed(job, common.INTERNAL, message, 500, None)
        finally:
            reporter.cancel()
            self.jobs.pop(job.import_id, None)
            if job.staging is not None:
                await asyncio.to_thread(shutil.rmtree, job.staging, True)

    async def _run(self, job: Job) -> None:
        started = time.monotonic()
        command = job.command
        if job.archive is not None:
            job.phase = "extracting"
            archive = job.archive
            try:
                await asyncio.to_thread(sources.extract_zip, archive, job.root, self._zip_limits)
            finally:
                archive.unlink(missing_ok=True)
        self._check(job)
        job.phase = "reading"
        manifest = await asyncio.to_thread(formats.read_manifest, job.root, command.format)
        job.total = len(manifest.entries)
        await self._outcome.validated(job, manifest)
        job.phase = "decoding"
        records, corrupt = await asyncio.to_thread(self._decode_all, job, manifest.entries)
        self._check(job)
        job.phase = "committing"
        # The images must be on disk before the events that refer to them are stored.
        await asyncio.to_thread(self._store.sync)
        report = c.ImportReport(
            format=manifest.format,
            files=len(manifest.entries) + len(manifest.skipped) + len(manifest.label_problems),
            imported=len(records),
            corrupt=corrupt,
            skipped=[c.FileProblem(p.file, p.reason) for p in manifest.skipped],
            label_problems=[c.FileProblem(p.file, p.reason) for p in manifest.label_problems],
            seconds=round(time.monotonic() - started, 3),
        )
        await self._outcome.commit(job, records, report)

    def _decode_all(
        self, job: Job, entries: list[formats.Entry]
    ) -> tuple[list[c.ImageRecord], list[c.FileProblem]]:
        records: list[c.ImageRecord] = []
        corrupt: list[c.FileProblem] = []
        with ThreadPoolExecutor(self._workers, thread_name_prefix="decode") as pool:
            # A bounded window of files in flight keeps memory flat however large the import.
            for start in range(0, len(entries), WINDOW):
                chunk = entries[start : start + WINDOW]
                for entry, result in zip(
                    chunk, pool.map(self._decode_one(job), chunk), strict=True
                ):
                    job.done += 1
                    if isinstance(result, CorruptImage):
                        reason = str(result) or "not a readable image"
                        corrupt.append(c.FileProblem(entry.name, reason))
                    elif result is not None:
                        records.append(_record(entry, result))
        return records, corrupt

    def _decode_one(self, job: Job) -> Callable[[formats.Entry], ImageInfo | CorruptImage | None]:
        return lambda entry: self._decode(job, entry)

    def _decode(self, job: Job, entry: formats.Entry) -> ImageInfo | CorruptImage | None:
        if job.cancel.is_set():
            return None
        try:
            return inspect(entry.path, self._store)
        except CorruptImage as exc:
            return exc
        except OSError as exc:
            return CorruptImage(f"cannot read the file: {exc.strerror or exc}")

    def _check(self, job: Job) -> None:
        if job.cancel.is_set():
            raise Cancelled

    async def _report(self, job: Job) -> None:
        while True:
            with contextlib.suppress(Exception):  # progress is disposable: never fail a job on it
                await self._publish(job)
            await asyncio.sleep(PROGRESS_INTERVAL_S)


def _record(entry: formats.Entry, info: ImageInfo) -> c.ImageRecord:
    return c.ImageRecord(
        image_id=info.sha256,
        filename=entry.name,
        label=entry.label or "",
        width=info.width,
        height=info.height,
        size=info.size,
        format=info.format,
        phash=info.phash,
        split_hint=entry.split,
        boxes=[c.Box(b.label, b.x, b.y, b.w, b.h) for b in entry.boxes],
        near_hash=info.near_hash,
    )

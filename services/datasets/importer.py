"""An import job: unpack or locate the source, read its manifest, decode every image, report.

Runs on the kernel's job runner, in the datasets service's event loop, with the blocking work
(ZIP extraction, Pillow, hashing) in threads. Its outcome is a decision of the Dataset decider
(``commit`` its images, or ``fail`` with why) that the runner stores in the dataset, in the
trace of the command that started it, with ids derived from that command's; its manifest read,
the job stores ``ImportValidated`` on the way; its progress goes to a live publisher as the
runner's heartbeat. Its manifest streams into a SQLite file of its own (``spill.StagedFile``,
under ``spill``; the entries in ``manifestfile.ManifestFile``) and is decoded from there, and
what it read waits in the same file, not in memory, until it commits; its commit reads it
back batch by batch while the events are stored, so an import's memory does not grow with
its size. Imports the dataset's domain, pure libraries, ``spill`` and ``manifestfile``, and
the kernel.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from contracts import common
from contracts import datasets as c
from services.datasets import claims, domain, faults, formats, metrics, sources
from services.datasets.decoding import Decoder
from services.datasets.imaging import CorruptImage, ImageInfo
from services.datasets.manifestfile import ManifestFile
from services.datasets.spill import StagedFile
from services.kernel.blobstore import BlobStore
from services.kernel.jobs import runner
from services.kernel.jobs.runner import Failure, JobRunner, Outcomes
from services.kernel.repository import Repository

log = logging.getLogger(__name__)
#: Records of decoded files (``decoding.Decoder``) staged on disk at a time.
WINDOW = 256
#: An import's outcome: a decision of the Dataset decider.
Decision = Callable[[domain.Dataset], Sequence[c.Event]]
#: The HTTP status each failure of an import deserves (``ImportFailed.status``), by its code;
#: a source's own errors carry theirs.
STATUS = {common.INTERNAL: 500, common.UNAVAILABLE: 503, "INTERRUPTED": 409, "CANCELLED": 409}
#: Why an import whose service stopped during it failed.
INTERRUPTED = (
    "the datasets service stopped during this import; nothing of it was kept: start it again"
)


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
    #: The claim on ``staging`` (``claims``), let go once the folder is removed.
    claim: claims.Claim | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: The starting command's trace headers, carried on to the job's outcome.
    headers: Mapping[str, str] = field(default_factory=dict)
    phase: str = "starting"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    #: How it ended, for the metrics (``metrics.IMPORT_OUTCOMES``): failed unless it says else.
    outcome: str = "failed"
    #: What it has read so far, on disk (``Importer.spill``), until it ends.
    staged: StagedFile | None = None
    #: The project's task: a detection project keeps every box (``formats.read_manifest``).
    task: str = "classification"

    @property
    def import_id(self) -> str:
        return self.command.import_id

    def drop_staging(self) -> None:
        """Removes an upload's folder, then lets its claim go (blocking: run it in a thread)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.claim is not None:
            self.claim.release()

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


def failed(import_id: str, dataset_id: str, failure: Failure, status: int = 0) -> Decision:
    """How an import fails: nothing of it is kept."""
    message = failure.message
    if failure.code == common.INTERNAL:
        message = f"the import failed unexpectedly: {message}"
    event = c.ImportFailed(
        dataset_id=dataset_id,
        import_id=import_id,
        code=failure.code,
        message=message,
        status=status or STATUS.get(failure.code, 422),
        field=failure.field,
    )
    return partial(domain.fail, command=event)


#: How an import ends: decided in its dataset, by the decision its work returns.
OUTCOMES: Outcomes[domain.Dataset, Decision] = Outcomes(
    noun=domain.IMPORT.noun,
    finish=lambda state, decide: decide(state),
    failed=failed,
    crash=common.INTERNAL,
    in_parent=True,
)


class Importer:
    def __init__(
        self,
        store: BlobStore,
        datasets: Repository[domain.Dataset],
        publish: Callable[[Job], Awaitable[None]],
        *,
        instance: str,
        zip_limits: sources.ZipLimits,
        workers: int = 0,
        spill: Path | None = None,
    ) -> None:
        self._store = store
        #: The folder of the running imports' staging files (``<import id>.db``).
        self.spill = spill or store.root / "spill"
        self._publish = publish
        self._zip_limits = zip_limits
        #: Decodes in ``workers`` processes (default: one per core).
        self.decoder = Decoder(store, workers)
        self.runner = JobRunner(datasets, OUTCOMES, instance=instance)
        self.jobs: dict[str, Job] = {}

    def start(self, job: Job) -> asyncio.Task[None]:
        """Runs the import in the background; its task ends once its outcome is stored."""
        self.jobs[job.import_id] = job
        metrics.import_started()
        work = self._job(job, heartbeat=partial(self._publish, job), tidy=partial(self._tidy, job))
        return self.runner.start(work)

    def sweep_spill(self) -> list[str]:
        """Deletes the staging files whose import's process is dead (what a crash left), never
        one a live import uses, of this instance or of another on the same workspace (each
        holds its file's claim: ``claims``); returns the imports whose file went."""
        return claims.sweep(self.spill, ".db", keep=list(self.jobs))

    def _job(self, job: Job, **hooks: Any) -> runner.Job[Decision]:
        """The import as the runner runs it: in its dataset, in its command's trace and ids."""
        work = partial(self._work, job)
        dataset_id = job.command.dataset_id
        return runner.Job(job.import_id, dataset_id, work, job.headers, job.command, **hooks)

    async def _work(self, job: Job) -> Decision:
        """The import's outcome; a whole-import problem of the source, or a cancel, fails it
        with its own code and status."""
        try:
            decision = await self._run(job)
        except Cancelled:
            job.outcome = "cancelled"
            failure = Failure("CANCELLED", "the import was cancelled")
            return failed(job.import_id, job.command.dataset_id, failure)
        except sources.SourceError as err:
            failure = Failure(err.code, err.message, err.field)
            return failed(job.import_id, job.command.dataset_id, failure, err.status)
        job.outcome = "committed"
        return decision

    async def _tidy(self, job: Job) -> None:
        self.jobs.pop(job.import_id, None)
        if job.staged is not None:
            await asyncio.to_thread(job.staged.close)
        metrics.import_ended(job.outcome, time.monotonic() - job.started)
        await asyncio.to_thread(job.drop_staging)
        faults.fault_point("after_staging_cleanup")
        if job.outcome == "committed":  # its images folded into the index now, not in the
            await self._fold(job.command.dataset_id)  # time of the next command's answer

    async def _fold(self, dataset_id: str) -> None:
        try:
            await self.runner.repo.load(dataset_id)
        except Exception:  # the next command on the dataset folds it then
            log.warning("folding dataset %s after its import failed", dataset_id, exc_info=True)

    async def _run(self, job: Job) -> Decision:
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
        job.staged = await asyncio.to_thread(StagedFile, self.spill / f"{job.import_id}.db")
        entries = ManifestFile(job.staged.db)  # the manifest streams onto disk, not memory
        read = partial(formats.read_manifest, job.root, command.format, job.task, entries.add)
        manifest = await asyncio.to_thread(read)
        job.total = manifest.count
        metrics.files("skipped", len(manifest.skipped) + len(manifest.label_problems))
        await self._validated(job, manifest)
        job.phase = "decoding"
        imported, corrupt, corrupt_total = await asyncio.to_thread(self._decode_all, job, entries)
        self._check(job)
        job.phase = "committing"
        # The images must be on disk before the events that refer to them are stored.
        await asyncio.to_thread(self._store.sync)
        # Its lists are bounded (``ImportReport``): a source of a million stray files commits.
        report = c.ImportReport(
            format=manifest.format,
            files=manifest.count + len(manifest.skipped) + len(manifest.label_problems),
            imported=imported,
            corrupt=corrupt,
            skipped=_listed(manifest.skipped),
            label_problems=_listed(manifest.label_problems),
            seconds=round(time.monotonic() - started, 3),
            corrupt_total=corrupt_total,
            skipped_total=len(manifest.skipped),
            label_problems_total=len(manifest.label_problems),
        )
        return partial(
            domain.commit,
            dataset_id=command.dataset_id,
            import_id=job.import_id,
            records=job.staged,
            report=report,
        )

    async def _validated(self, job: Job, manifest: formats.Manifest) -> None:
        """Stores that the source was read, while the import still runs."""
        event = c.ImportValidated(
            dataset_id=job.command.dataset_id,
            import_id=job.import_id,
            format=manifest.format,
            files=manifest.count,
            classes=manifest.classes,
        )

        def decide(state: domain.Dataset) -> list[c.Event]:
            domain.running(state, job.import_id)
            return [event]

        await self.runner.store(self._job(job), decide, "validated")

    def _decode_all(self, job: Job, manifest: ManifestFile) -> tuple[int, list[c.FileProblem], int]:
        """Reads every file of the manifest, its record staged on disk a window at a time;
        answers how many were read, the first files that were not images (as many as a report
        lists), and how many were not."""
        assert job.staged is not None
        records: list[c.ImageRecord] = []
        corrupt: list[c.FileProblem] = []
        corrupt_total = 0
        sent: deque[formats.Entry] = deque()  # the files in the decoder's window, in order

        def files() -> Iterator[Path]:
            for entry in manifest.entries():
                sent.append(entry)
                yield entry.path

        with closing(self.decoder.decode(files(), job.cancel.is_set)) as results:
            # A bounded window of files in flight keeps memory flat however large the import.
            for result in results:
                entry = sent.popleft()
                job.done += 1
                if isinstance(result, CorruptImage):
                    corrupt_total += 1
                    if len(corrupt) < c.REPORT_LISTED:
                        reason = str(result) or "not a readable image"
                        corrupt.append(c.FileProblem(entry.name, reason))
                    metrics.files("failed")
                elif result is not None:
                    records.append(_record(entry, result))
                    metrics.files("imported", size=result.size)
                if len(records) >= WINDOW:
                    job.staged.add(records)
                    records.clear()
        job.staged.add(records)
        return job.staged.count, corrupt, corrupt_total

    def _check(self, job: Job) -> None:
        if job.cancel.is_set():
            raise Cancelled


def _listed(problems: Sequence[formats.Problem]) -> list[c.FileProblem]:
    """The problems a report lists (the first ones); its total counts the rest."""
    return [c.FileProblem(p.file, p.reason) for p in problems[: c.REPORT_LISTED]]


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

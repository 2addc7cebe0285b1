"""Command handlers of the datasets service.

Each command is decided against the stored Dataset (``kernel.commands.execute``). Starting an
import checks what can be checked at once (the project, the path, the archive's name), stores
``ImportStarted`` and leaves the rest to a background job (``importer``, on the kernel's job
runner), which stores its outcome in the dataset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from contracts import common
from contracts import datasets as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.datasets import domain, faults, health, sources
from services.datasets.claims import CLAIM_WAIT_S, Claim, claim_of, sweep
from services.datasets.importer import Importer, Job
from services.datasets.importlease import ImportLeases
from services.datasets.uploads import UploadDamaged, UploadGone, Uploads
from services.kernel.commands import execute, rejected
from services.kernel.domain import DomainError
from services.kernel.lease import Lease
from services.kernel.repository import Repository

FORMATS = ("auto", "folder", "csv", "coco", "yolo")
#: The claimed upload's name inside its import's staging folder (beside ``files/``).
ARCHIVE = "upload.zip"


@dataclass
class KnownProject:
    """What this service needs to know of a project, folded from the project's own events."""

    id: str
    task_type: str
    archived: bool = False


_REFUSALS = (DomainError,)
log = logging.getLogger(__name__)


class Datasets:
    def __init__(
        self,
        repo: Repository[domain.Dataset],
        find_project: Callable[[str], Awaitable[KnownProject | None]] | None,
        *,
        instance: str,
        import_roots: Sequence[Path],
        uploads: Path,
        staging: Path,
        handed: Uploads | None = None,
    ) -> None:
        self.repo = repo
        self.find_project = find_project
        self.importer: Importer | None = None
        self.instance = instance
        self.import_roots = list(import_roots)
        self.uploads = uploads
        self.staging = staging
        #: The Object Store bucket through which the gateway hands over uploaded archives.
        self.handed = handed
        #: Imports this process is handling, from the command's arrival to the job's end: their
        #: staging folders are live and no restart reaper may touch them.
        self.active: set[str] = set()
        #: Whether the read model, once it shows ``position``, has another instance running an
        #: import: that instance answers a cancel of it (``cancel_import``).
        self.runs_elsewhere: Callable[[str, int], Awaitable[bool]] | None = None
        #: The leases of the imports this instance runs (none: a single instance, no NATS).
        self.leases: ImportLeases | None = None
        self._holding: set[asyncio.Task[None]] = set()

    async def _run(
        self,
        command: c.Message,
        dataset_id: str,
        decide: Callable[[domain.Dataset], list[c.Event]],
        headers: Mapping[str, str],
        *,
        offload: bool = False,
    ) -> Reply:
        return await execute(
            self.repo,
            dataset_id,
            command,
            decide,
            headers=headers,
            refusals=_REFUSALS,
            noun="dataset",
            offload=offload,
        )

    # --- commands ---------------------------------------------------------------------------

    async def start_import(self, command: c.StartImport, headers: Mapping[str, str]) -> Reply:
        if command.import_id in self.active:
            return CommandRejected(
                code=common.CONFLICT, message=f"import {command.import_id} is already running"
            )
        self.active.add(command.import_id)
        job: Job | None = None
        lease: Lease | None = None
        started = False
        try:
            project = await self._project(command.dataset_id)
            if self.leases is not None:  # held before the import is stored (``importlease``)
                lease = await self.leases.take(command.import_id)
                if lease is None:
                    return CommandRejected(
                        code=common.CONFLICT,
                        message=f"import {command.import_id} is started by another instance",
                    )
            job = await self._take(command)
            job.task = project.task_type
            job.headers = dict(headers)
            reply = await execute(
                self.repo,
                command.dataset_id,
                command,
                partial(domain.start, command=command, instance=self.instance),
                headers=headers,
                refusals=_REFUSALS,
                noun="dataset",
            )
            if isinstance(reply, CommandAccepted) and reply.events:
                self._launch(job, lease)
                started = True
            return reply
        except DomainError as err:
            return rejected(err)
        except sources.SourceError as err:  # its status (403, 413, 415...) is not its code's
            return CommandRejected(
                code=err.code, message=err.message, field=err.field, status=err.status
            )
        finally:
            if not started:  # refused or failed: the claimed archive and its folder go too
                self.active.discard(command.import_id)
                if job is not None:
                    await asyncio.to_thread(job.drop_staging)
                if lease is not None and self.leases is not None:
                    await self.leases.release(lease)
            if command.upload_object and self.handed is not None:
                # Claimed (the staging folder has the archive) or refused: not needed any more.
                await self.handed.discard(command.upload_object)

    def _launch(self, job: Job, lease: Lease | None) -> None:
        assert self.importer is not None
        task = self.importer.start(job)
        if lease is None or self.leases is None:
            task.add_done_callback(lambda _: self.active.discard(job.import_id))
            return
        holding = asyncio.create_task(self._hold(job.import_id, lease, task))
        self._holding.add(holding)  # held, or the loop may collect it mid-import
        holding.add_done_callback(self._holding.discard)

    async def _hold(self, import_id: str, lease: Lease, task: asyncio.Task[None]) -> None:
        """The import's lease, kept until its outcome is stored: only then is it forgotten
        here, so a reaper never takes this process's own running import for a dead one."""
        assert self.leases is not None
        try:
            await self.leases.hold(lease, task)
        except Exception:  # a bug: the lease expires, and the dataset keeps one outcome
            log.exception("holding the lease of import %s failed", import_id)
        finally:
            await asyncio.wait({task})
            self.active.discard(import_id)

    async def cancel_import(
        self, command: c.CancelImport, headers: Mapping[str, str]
    ) -> Reply | None:
        """Cancel an import on the instance that runs it. Every instance hears a cancel (see
        ``app.cancel_endpoint``): the one running the job cancels it; another keeps quiet (None)
        while the read model says that an instance other than itself runs the import, and
        otherwise answers the refusal every instance agrees on."""
        assert self.importer is not None
        job = self.importer.jobs.get(command.import_id)
        if job is not None and job.command.dataset_id == command.dataset_id:
            job.cancel.set()
            _, position, version = await self.repo.load(command.dataset_id)
            return CommandAccepted(
                aggregate_id=command.dataset_id, version=version, sequence=position
            )
        state, position = await self.repo.get(command.dataset_id)
        try:
            domain.running(state, command.import_id)
        except DomainError as err:
            return rejected(err)
        if self.runs_elsewhere is not None and await self.runs_elsewhere(
            command.import_id, position
        ):
            return None  # the instance running it answers
        return CommandRejected(
            code=common.CONFLICT,
            message="no live datasets instance runs that import; it ends as interrupted once "
            "the lease of the instance that ran it expires",
        )

    async def edit(self, command: domain.Edit, headers: Mapping[str, str]) -> Reply:
        """Every command the dataset alone decides (``domain.Edit``)."""
        decide = partial(domain.decide, command=command)
        return await self._run(command, command.dataset_id, decide, headers)

    async def create_split(self, command: c.CreateSplit, headers: Mapping[str, str]) -> Reply:
        try:
            project = await self._project(command.dataset_id, writable=False)
        except DomainError as err:
            return rejected(err)
        # Grouping compares every pair of near-duplicate hashes: seconds for 50k images, so
        # it is decided off the loop, which keeps answering other commands meanwhile.
        decide = partial(domain.create_split, command=command, task=project.task_type)
        return await self._run(command, command.dataset_id, decide, headers, offload=True)

    async def get_health(self, query: c.GetHealth) -> c.HealthReport:
        state, _ = await self.repo.get(query.dataset_id)
        project = await self.find_project(query.dataset_id) if self.find_project else None
        facts = [
            health.ImageFacts(
                i,
                img.filename,
                img.label,
                i,
                img.phash,
                img.width,
                img.height,
                img.near_hash,
                img.boxes,
            )
            for i, img in sorted(state.images.items())
        ]
        report = await asyncio.to_thread(
            health.report,
            facts,
            [health.DuplicateSeen(d.file, d.label, d.image_id) for d in state.duplicates],
            [health.CorruptSeen(p.file, p.reason) for p in state.corrupt],
            detection=project is not None and project.task_type == "detection",
            duplicate_files=state.duplicates_total,
            corrupt_files=state.corrupt_total,
        )
        return c.HealthReport(dataset_id=query.dataset_id, report=report)

    # --- checks made before an import starts ------------------------------------------------------

    async def _project(self, dataset_id: str, writable: bool = True) -> KnownProject:
        assert self.find_project is not None
        project = await self.find_project(dataset_id)
        if project is None:
            raise domain.ProjectNotFound(f"project {dataset_id} does not exist", field="project_id")
        if writable and project.archived:
            raise domain.ProjectIsArchived(f"project {dataset_id} is archived; restore it first")
        return project

    async def _take(self, command: c.StartImport) -> Job:
        if command.source_kind == "upload" and command.upload_object:
            if command.format not in FORMATS:
                raise domain.InvalidImport(f"format must be one of {', '.join(FORMATS)}", "format")
            if self.handed is not None:  # what crashed gateways left, now and then
                await self.handed.sweep_if_due()
            return await self._fetch(command, command.upload_object)
        return await asyncio.to_thread(self._job, command)

    async def _fetch(self, command: c.StartImport, name: str) -> Job:
        """Claim an archive handed over through the Object Store: fetched into the import's
        staging folder before anything of the import is stored."""
        if self.handed is None or not name.startswith(c.upload_object("")[:-4]):
            raise domain.InvalidImport("the uploaded archive is not where it was staged", "file")
        folder, claim = await asyncio.to_thread(self._folder, command.import_id)
        job = Job(command, folder / "files", staging=folder, archive=folder / ARCHIVE, claim=claim)
        try:
            await self.handed.fetch(name, folder / ARCHIVE)
        except (UploadGone, UploadDamaged) as exc:
            await asyncio.to_thread(job.drop_staging)
            why = "is no longer there" if isinstance(exc, UploadGone) else "arrived damaged"
            raise domain.InvalidImport(
                f"the uploaded archive {why}: send it again", "file"
            ) from None
        except BaseException:
            await asyncio.to_thread(job.drop_staging)
            raise
        job.root.mkdir()
        return job

    def _folder(self, import_id: str) -> tuple[Path, Claim]:
        """An import's new staging folder, and the claim that keeps every sweep off it (taken
        first: a sweep may be removing what a dead process left under the same name)."""
        folder = self.staging / import_id
        claim = Claim.take(claim_of(folder), CLAIM_WAIT_S)
        if claim is None:
            raise domain.ImportAlreadyExists(f"import {import_id} is already being started")
        try:
            folder.mkdir()
        except FileExistsError:
            claim.release()
            raise domain.ImportAlreadyExists(f"import {import_id} already exists") from None
        return folder, claim

    def _job(self, command: c.StartImport) -> Job:
        if command.format not in FORMATS:
            raise domain.InvalidImport(f"format must be one of {', '.join(FORMATS)}", "format")
        if command.source_kind == "local":
            return Job(command, sources.resolve_local(command.source, self.import_roots))
        if command.source_kind != "upload" or command.staged_path is None:
            raise domain.InvalidImport("source_kind must be local or upload", "source_kind")
        staged = Path(command.staged_path).resolve()
        if staged.parent != self.uploads.resolve() or not staged.is_file():
            raise domain.InvalidImport("the uploaded archive is not where it was staged", "file")
        return self._claim(command, staged)

    def _claim(self, command: c.StartImport, staged: Path) -> Job:
        """Take the gateway's archive by moving it into the import's staging folder.

        The move is atomic: from then on the file is this service's (the gateway deletes what
        is still under its name whatever the outcome), and a gateway that gave up first leaves
        nothing to move, so the import is refused before anything of it is stored.
        """
        folder, claim = self._folder(command.import_id)
        job = Job(command, folder / "files", staging=folder, archive=folder / ARCHIVE, claim=claim)
        try:
            os.rename(staged, folder / ARCHIVE)
        except OSError:
            job.drop_staging()
            raise domain.InvalidImport(
                "the uploaded archive is no longer there: send it again", "file"
            ) from None
        job.root.mkdir()
        return job

    # --- after a restart ----------------------------------------------------------------------

    async def clear_staging(self, import_id: str) -> None:
        """Remove an ended import's staging folder (its archive and extracted files), unless a
        live process still holds it (a slow owner, which removes it when its job ends)."""
        await asyncio.to_thread(self._clear, import_id)

    def _clear(self, import_id: str) -> None:
        claim = Claim.take(claim_of(self.staging / import_id))
        if claim is not None:
            shutil.rmtree(self.staging / import_id, ignore_errors=True)
            claim.release()
            faults.fault_point("after_staging_cleanup")

    async def reap_staging(self, keep: set[str]) -> list[str]:
        """Remove every staging folder whose owner is dead, but those of ``keep`` and of the
        imports this process handles: what a crash left, even before its import was recorded,
        never what a live process of any instance on this workspace uses (``claims``). Returns
        the imports whose folder it removed."""
        return await asyncio.to_thread(sweep, self.staging, "", keep | self.active)

"""The exporter's long work, on the kernel's job runner: an accepted export run to its end, and
the interrupted ones reaped.

``ExportRunner.start`` runs an export in the background: fetch the checkpoint its record names
(sha256 checked), export it in a thread through the engine (parity, latency), bundle it; the
kernel's ``JobRunner`` stores the outcome through the decider — completed, or failed with its
reason — in the trace of the command that asked for it. ``reap`` ends as interrupted, once the
read model has caught up, the exports this instance left running when it stopped.

Imports the domain, ``contracts`` and the kernel; the engine (torch) is passed in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from nats.js.object_store import ObjectStore
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import exports as x
from contracts import training as t
from services.exporter import domain, metrics
from services.kernel import artifacts
from services.kernel.domain import Refused
from services.kernel.jobs import runner, sha256_file
from services.kernel.jobs.runner import JobRunner, Outcomes
from services.kernel.projection import ProjectionRunner
from services.kernel.repository import Repository

#: Labelled images, as the engine reads them for parity.
Samples = list[tuple[Path, int]]
#: Brings the samples' files to this machine (they are fetched by content hash, not shared).
Fetch = Callable[[], Awaitable[None]]
Outcome = x.ExportCompleted | x.ExportFailed


@dataclass(frozen=True)
class Job:
    """An accepted export: what to export, from which recorded checkpoint, checked on what."""

    export_id: str
    run_id: str
    format: str
    record: t.CheckpointSaved
    samples: Samples
    fetch: Fetch | None = None


#: How an export ends: its outcome decided by the Export decider, its failures as ``ExportFailed``.
OUTCOMES: Outcomes[domain.State, Outcome] = Outcomes(
    noun=domain.EXPORT.noun,
    finish=domain.finish,
    failed=lambda export_id, run_id, failure: x.ExportFailed(
        export_id=export_id, run_id=run_id, code=failure.code, message=failure.message
    ),
    crash="EXPORT_FAILED",
)


def runner_for(
    exports: Repository[domain.State], instance: str
) -> JobRunner[domain.State, Outcome]:
    """The kernel's job runner of this instance's exports."""
    return JobRunner(exports, OUTCOMES, instance=instance)


class ExportRunner:
    def __init__(
        self,
        jobs: JobRunner[domain.State, Outcome],
        *,
        objects: ObjectStore,
        artifacts: Path,
        workdir: Path,
        engine: Any,
        files: ObjectStore,
    ) -> None:
        """``jobs`` runs the exports (``runner_for``); ``artifacts`` holds the trainer's
        checkpoints on this machine, ``workdir`` each export's files; ``engine`` is the export
        engine's facade; ``files`` the exports bucket, where a completed export's files are
        served from."""
        self.jobs, self.objects, self.engine, self.files = jobs, objects, engine, files
        self.artifacts, self.workdir, self.instance = artifacts, workdir, jobs.instance

    @property
    def exports(self) -> Repository[domain.State]:
        return self.jobs.repo

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        return self.jobs.tasks

    def start(self, job: Job, headers: Mapping[str, str]) -> None:
        self.jobs.start(
            runner.Job(job.export_id, job.run_id, partial(self._measured, job), headers)
        )

    async def interrupt(self, export_id: str, run_id: str) -> None:
        await self.jobs.interrupt(export_id, run_id, domain.INTERRUPTED)

    async def reap(self, read_model: ProjectionRunner, db: AsyncEngine) -> None:
        """Ends as interrupted the exports this instance left running when it stopped."""
        await self.jobs.reap(read_model, db, domain.INTERRUPTED)

    async def _measured(self, job: Job) -> Outcome:
        """The export, timed and counted by how it ended (``studio_export*``)."""
        started, completed = time.monotonic(), False
        try:
            outcome = await self._export(job)
            completed = isinstance(outcome, x.ExportCompleted)
            return outcome
        finally:
            metrics.export_ended(job.format, completed, time.monotonic() - started)

    async def _export(self, job: Job) -> Outcome:
        checkpoint = await self._checkpoint(job)
        if job.fetch is not None:
            await job.fetch()
        out = self.workdir / job.export_id
        out.mkdir(parents=True, exist_ok=True)
        exported = await asyncio.to_thread(self._write, job, checkpoint, out)
        parity = _parity(exported.parity)
        metrics.parity_checked(job.format, parity.passed)
        failure = domain.parity_failure(job.export_id, job.run_id, parity)
        if failure is not None:
            return _said_of_boxes(failure, exported.parity)
        card = {"run_id": job.run_id, "checkpoint": job.record.kind, "epoch": job.record.epoch}
        bundle = await asyncio.to_thread(
            self.engine.bundle, exported, checkpoint, card, out / x.BUNDLE_NAME
        )
        # files before facts: both are in the bucket before the completion naming them is stored
        file_object, bundle_object = await self._keep(job.export_id, exported.path, bundle)
        return x.ExportCompleted(
            export_id=job.export_id,
            run_id=job.run_id,
            format=job.format,
            file_name=exported.path.name,
            size=exported.size,
            sha256=exported.sha256,
            parity=parity,
            latency=_latency(exported.latency),
            bundle_size=bundle.stat().st_size,
            bundle_sha256=await asyncio.to_thread(sha256_file, bundle),
            object_name=file_object,
            bundle_object=bundle_object,
        )

    async def _keep(self, export_id: str, *paths: Path) -> list[str]:
        """Puts each file in the exports bucket under its declared name; returns the names."""
        names = [x.export_object(export_id, path.name) for path in paths]
        for name, path in zip(names, paths, strict=True):
            await artifacts.upload(self.files, name, path)
        return names

    def _write(self, job: Job, checkpoint: Path, out: Path) -> Any:
        if job.format == "onnx":
            return self.engine.export_onnx(checkpoint, out / "model.onnx", job.samples)
        return self.engine.export_torchscript(checkpoint, out / "model.pt", job.samples)

    async def _checkpoint(self, job: Job) -> Path:
        """A private copy of the file the export's ``CheckpointSaved`` record names (a new name
        per epoch, never a fixed path): this machine's when it is there, else the Object
        Store's. A local file that does not match its record fails the export rather than
        being fetched again: a damaged checkpoint is for the operator to see."""
        record, name = job.record, job.record.object_name
        local = self.artifacts / job.run_id / Path(name).name
        copy = self.workdir / job.export_id / "checkpoint.pt"
        try:
            return await artifacts.fetch(
                self.objects, name, record.sha256, local, copy=copy, mismatch="refuse"
            )
        except artifacts.ArtifactMissing:
            message = f"the {record.kind} checkpoint of run {job.run_id} is gone"
            raise Refused("CHECKPOINT_MISSING", message) from None
        except artifacts.ArtifactCorrupt:
            message = (
                f"the {record.kind} checkpoint's sha256 does not match the one recorded when it "
                "was saved"
            )
            raise Refused("CORRUPT_CHECKPOINT", message) from None


def _said_of_boxes(failure: x.ExportFailed, p: Any) -> x.ExportFailed:
    """A detector's failure in its own terms (its parity compares boxes, not logits)."""
    if getattr(p, "min_iou", None) is None:
        return failure
    message = (
        f"the exported detector's boxes disagree with the trained one's on "
        f"{1 - p.top1_agreement:.0%} of {p.images} images: smallest IoU of a matched pair "
        f"{p.min_iou:.3f} (needs 0.99), largest score gap {p.max_abs_diff:.3g}"
    )
    return msgspec.structs.replace(failure, message=message)


def _parity(p: Any) -> x.Parity:
    return x.Parity(
        images=p.images,
        max_abs_diff=float(p.max_abs_diff),
        top1_agreement=float(p.top1_agreement),
        torch_accuracy=p.torch_accuracy,
        exported_accuracy=getattr(p, "onnx_accuracy", None),
        passed=bool(p.passed),
        min_iou=getattr(p, "min_iou", None),
        detections=getattr(p, "detections", None),
    )


def _latency(lat: Any) -> x.Latency | None:
    if lat is None:
        return None
    return x.Latency(
        exported_b1=lat.onnx_b1,
        exported_b32=lat.onnx_b32,
        torch_b1=lat.torch_b1,
        torch_b32=lat.torch_b32,
    )

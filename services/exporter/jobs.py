"""The exporter's long work: an accepted export run to its end, and the interrupted ones reaped.

``ExportRunner.start`` runs an export in the background: fetch the checkpoint its record names
(sha256 checked), export it in a thread through the engine (parity, latency), bundle it, and
store the outcome through the decider — completed, or failed with its reason — in the trace of
the command that asked for it. ``reap`` ends as interrupted, once the read model has caught up,
the exports this instance left running when it stopped, so that none stays running forever.

Imports the domain, ``contracts`` and the kernel; the engine (torch) is passed in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from nats.js.object_store import ObjectStore

from contracts import Message
from contracts import exports as x
from contracts import training as t
from contracts.common import UNAVAILABLE, CommandRejected
from services.exporter import domain
from services.kernel import artifacts
from services.kernel.commands import execute
from services.kernel.domain import DomainError, Refused
from services.kernel.jobs import sha256_file
from services.kernel.projection import ProjectionRunner
from services.kernel.repository import Repository
from services.kernel.transient import TRANSIENT

log = logging.getLogger(__name__)

#: Labelled images, as the engine reads them for parity.
Samples = list[tuple[Path, int]]


@dataclass(frozen=True)
class Job:
    """An accepted export: what to export, from which recorded checkpoint, checked on what."""

    export_id: str
    run_id: str
    format: str
    record: t.CheckpointSaved
    samples: Samples


class ExportRunner:
    def __init__(
        self,
        *,
        exports: Repository[domain.State],
        objects: ObjectStore,
        artifacts: Path,
        workdir: Path,
        engine: Any,
        instance: str,
    ) -> None:
        """``artifacts`` holds the trainer's checkpoints on this machine, ``workdir`` each
        export's files; ``engine`` is the export engine's facade."""
        self.exports, self.objects, self.engine = exports, objects, engine
        self.artifacts, self.workdir, self.instance = artifacts, workdir, instance
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, job: Job, headers: Mapping[str, str]) -> None:
        task = asyncio.create_task(self._run(job, dict(headers)))
        self.tasks.add(task)  # held, or the loop may collect it mid-export
        task.add_done_callback(self.tasks.discard)

    async def interrupt(self, export_id: str, run_id: str) -> None:
        await self._record(domain.interrupted(export_id, run_id), trace={})

    async def _run(self, job: Job, trace: Mapping[str, str]) -> None:
        try:
            outcome = await self._export(job)
        except Refused as err:
            outcome = self._failed(job, err.code, err.message)
        except TRANSIENT as exc:  # past the Object Store's retries: say so, not "export failed"
            log.warning("export %s: NATS unreachable (%r)", job.export_id, exc)
            message = f"NATS was unreachable ({type(exc).__name__}); export again once it is back"
            outcome = self._failed(job, UNAVAILABLE, message)
        except Exception as exc:  # the engine (torch, ONNX) fails in many ways: the job says why
            log.exception("export %s failed", job.export_id)
            outcome = self._failed(job, "EXPORT_FAILED", f"{type(exc).__name__}: {exc}")
        try:
            await self._record(outcome, trace)
        except Exception:  # past the store's own retries: a background task can only say so
            log.exception("export %s: could not store its outcome", job.export_id)

    async def _export(self, job: Job) -> x.ExportCompleted | x.ExportFailed:
        checkpoint = await self._checkpoint(job)
        out = self.workdir / job.export_id
        out.mkdir(parents=True, exist_ok=True)
        exported = await asyncio.to_thread(self._write, job, checkpoint, out)
        parity = _parity(exported.parity)
        failure = domain.parity_failure(job.export_id, job.run_id, parity)
        if failure is not None:
            return failure
        card = {"run_id": job.run_id, "checkpoint": job.record.kind, "epoch": job.record.epoch}
        bundle = await asyncio.to_thread(
            self.engine.bundle, exported, checkpoint, card, out / "bundle.zip"
        )
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
        )

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

    @staticmethod
    def _failed(job: Job, code: str, message: str) -> x.ExportFailed:
        return x.ExportFailed(
            export_id=job.export_id, run_id=job.run_id, code=code, message=message
        )

    async def _record(self, outcome: x.ExportCompleted | x.ExportFailed, trace: Any) -> None:
        """Stores the outcome in the trace of the command that started the export."""
        reply = await execute(
            self.exports,
            outcome.export_id,
            Message(actor=self.instance),
            partial(domain.finish, outcome=outcome),
            headers=trace,
            refusals=(DomainError,),
            noun="export",
        )
        if isinstance(reply, CommandRejected):
            log.error(
                "export %s: could not store its outcome: %s", outcome.export_id, reply.message
            )


async def reap(
    runner: ProjectionRunner,
    left_running: Callable[[], Awaitable[Sequence[tuple[str, str]]]],
    exports: ExportRunner,
) -> None:
    """Exports this instance left running when it stopped end as failed (never running
    forever); ``left_running`` lists them (export id, run id) from the caught-up read model."""
    if not await runner.caught_up(timeout=120):
        return
    for export_id, run_id in await left_running():
        await exports.interrupt(export_id, run_id)


def _parity(p: Any) -> x.Parity:
    return x.Parity(
        images=p.images,
        max_abs_diff=float(p.max_abs_diff),
        top1_agreement=float(p.top1_agreement),
        torch_accuracy=p.torch_accuracy,
        exported_accuracy=getattr(p, "onnx_accuracy", None),
        passed=bool(p.passed),
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

"""The exporter's decisions and jobs: an Export is requested (its checkpoint's sha256 on record),
then completed — only if its parity check passed — or failed with the reason and the numbers.

The blocking work (export, parity, latency, bundle, prediction) runs in threads through the
engine; this module stores the outcome and answers predictions.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts import Message, common
from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.kernel import dataview
from services.kernel.blobstore import BlobStore
from services.kernel.commands import execute
from services.kernel.eventstore import EventStore, check_id
from services.kernel.jobs import Refused, finish_running, sha256_file, start_once
from services.kernel.repository import Repository

log = logging.getLogger(__name__)

#: Parity needs at least this many test images (all of them when there are fewer).
PARITY_IMAGES = 100


@dataclass(frozen=True)
class Export:
    export_id: str
    run_id: str
    status: str
    format: str
    file: str = ""


State = Export | None


def request(state: State, event: x.ExportRequested) -> list[x.Event]:
    return start_once(state, event, "export", event.export_id)


def finish(state: State, event: x.Event) -> list[x.Event]:
    return finish_running(state, event, "export")


def evolve(state: State, event: x.Event) -> State:
    match event:
        case x.ExportRequested():
            return Export(event.export_id, event.run_id, "running", event.format)
        case x.ExportCompleted():
            return replace(state, status="completed", file=event.file_name) if state else state
        case x.ExportFailed():
            return replace(state, status="failed") if state else state
    return state


class Exporter:
    def __init__(
        self,
        *,
        exports: Repository[State],
        runs: EventStore[t.Event],
        datasets: EventStore[d.Event],
        blobs: BlobStore,
        artifacts: Path,
        workdir: Path,
        objects: ObjectStore,
        instance: str,
        engine: Any,
    ) -> None:
        self.repo, self.runs, self.datasets = exports, runs, datasets
        self.blobs, self.artifacts, self.workdir, self.objects = blobs, artifacts, workdir, objects
        self.instance, self.engine = instance, engine
        self.predictor = engine.Predictor()
        #: The starting command's trace headers, by export, carried on to its outcome.
        self.traces: dict[str, Mapping[str, str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def path(self, export_id: str, file_name: str) -> Path:
        return self.workdir / export_id / file_name

    async def request_export(self, command: x.RequestExport, headers: Mapping[str, str]) -> Reply:
        try:
            check_id(command.export_id)
            requested, samples = await self._checked(command)
        except Refused as err:
            return CommandRejected(
                code=err.code, message=err.message, field=err.field, status=err.status
            )
        except ValueError:
            return CommandRejected(code=common.NOT_FOUND, message="that run does not exist")
        self.traces[command.export_id] = dict(headers)
        reply = await self._store(command.export_id, command, partial(request, event=requested))
        if isinstance(reply, CommandAccepted) and reply.events:
            task = asyncio.create_task(self._run(requested, samples))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return reply

    async def _checked(
        self, command: x.RequestExport
    ) -> tuple[x.ExportRequested, list[tuple[Path, int]]]:
        if command.format not in x.FORMATS:
            formats = ", ".join(x.FORMATS)
            raise Refused(common.VALIDATION_ERROR, f"format must be one of {formats}", "format")
        if command.checkpoint not in ("best", "last"):
            raise Refused(common.VALIDATION_ERROR, "checkpoint must be best or last", "checkpoint")
        events = [s.event for s in await self.runs.load(command.run_id)]
        queued = next((e for e in events if isinstance(e, t.RunQueued)), None)
        if queued is None:
            raise Refused(common.NOT_FOUND, f"run {command.run_id} does not exist", "run_id")
        kind = command.checkpoint
        saved = [e for e in events if isinstance(e, t.CheckpointSaved) and e.kind == kind]
        if not saved:
            raise Refused(common.CONFLICT, f"run {command.run_id} has no {kind} checkpoint yet")
        samples = await self._samples(queued)
        requested = x.ExportRequested(
            export_id=command.export_id,
            run_id=command.run_id,
            checkpoint=kind,
            format=command.format,
            checkpoint_sha256=saved[-1].sha256,
            checkpoint_epoch=saved[-1].epoch,
            instance=self.instance,
        )
        return requested, samples

    async def _samples(self, queued: t.RunQueued) -> list[tuple[Path, int]]:
        """Test images for parity (validation images when the split has no test subset)."""
        view = await dataview.load(self.datasets, queued.project_id)
        index = {label: i for i, label in enumerate(queued.classes)}
        for subset in ("test", "val"):
            chosen = [
                (self.blobs.blob_path(image_id), index[label])
                for image_id, label in view.subset(queued.split_id, subset)
                if label in index
            ]
            if chosen:
                return chosen[: max(PARITY_IMAGES, 256)]
        raise Refused(common.VALIDATION_ERROR, "the run's split has no test or validation images")

    async def _run(self, requested: x.ExportRequested, samples: list[tuple[Path, int]]) -> None:
        ids = (requested.export_id, requested.run_id)
        try:
            checkpoint = await self._checkpoint(requested)
            out = self.workdir / requested.export_id
            out.mkdir(parents=True, exist_ok=True)
            exported = await asyncio.to_thread(self._export, requested, checkpoint, out, samples)
            parity = _parity(exported.parity)
            if not parity.passed:
                message = (
                    f"the exported model disagrees with the trained one: max |diff| "
                    f"{parity.max_abs_diff:.3g}, top-1 agreement {parity.top1_agreement:.2%}"
                )
                await self._finish(
                    ids,
                    x.ExportFailed(
                        export_id=ids[0],
                        run_id=ids[1],
                        code="PARITY_FAILED",
                        message=message,
                        parity=parity,
                    ),
                )
                return
            card = {
                "run_id": ids[1],
                "checkpoint": requested.checkpoint,
                "epoch": requested.checkpoint_epoch,
            }
            bundle = await asyncio.to_thread(
                self.engine.bundle, exported, checkpoint, card, out / "bundle.zip"
            )
            done = x.ExportCompleted(
                export_id=ids[0],
                run_id=ids[1],
                format=requested.format,
                file_name=exported.path.name,
                size=exported.size,
                sha256=exported.sha256,
                parity=parity,
                latency=_latency(exported.latency),
                bundle_size=bundle.stat().st_size,
                bundle_sha256=sha256_file(bundle),
            )
            await self._finish(ids, done)
        except Refused as err:
            await self._finish(
                ids,
                x.ExportFailed(export_id=ids[0], run_id=ids[1], code=err.code, message=err.message),
            )
        except Exception as exc:
            log.exception("export %s failed", ids[0])
            message = f"{type(exc).__name__}: {exc}"
            await self._finish(
                ids,
                x.ExportFailed(
                    export_id=ids[0], run_id=ids[1], code="EXPORT_FAILED", message=message
                ),
            )

    def _export(
        self,
        requested: x.ExportRequested,
        checkpoint: Path,
        out: Path,
        samples: list[tuple[Path, int]],
    ) -> Any:
        if requested.format == "onnx":
            return self.engine.export_onnx(checkpoint, out / "model.onnx", samples)
        return self.engine.export_torchscript(checkpoint, out / "model.pt", samples)

    async def _checkpoint(self, requested: x.ExportRequested) -> Path:
        """The checkpoint file its ``CheckpointSaved`` record names (a new name per epoch,
        never a fixed path), copied from this machine or else from the Object Store, and
        checked against the sha256 recorded when it was saved."""
        kind, run_id = requested.checkpoint, requested.run_id
        name = await self._object_name(requested)
        local = self.artifacts / run_id / Path(name).name
        copy = self.workdir / requested.export_id / "checkpoint.pt"
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            await asyncio.to_thread(shutil.copyfile, local, copy)
        except FileNotFoundError:  # another machine's run, or pruned since: the Object Store
            try:
                with copy.open("wb") as file:
                    await self.objects.get(name, writeinto=file)
            except NotFoundError:
                raise Refused(
                    "CHECKPOINT_MISSING", f"the {kind} checkpoint of run {run_id} is gone"
                ) from None
        if sha256_file(copy) != requested.checkpoint_sha256:
            raise Refused(
                "CORRUPT_CHECKPOINT",
                f"the {kind} checkpoint's sha256 does not match the one recorded when it was saved",
            )
        return copy

    async def _object_name(self, requested: x.ExportRequested) -> str:
        """The object name of the recorded checkpoint the export was requested with."""
        events = [s.event for s in await self.runs.load(requested.run_id)]
        for event in reversed(events):
            if (
                isinstance(event, t.CheckpointSaved)
                and event.kind == requested.checkpoint
                and event.sha256 == requested.checkpoint_sha256
            ):
                return event.object_name
        raise Refused(
            "CHECKPOINT_MISSING",
            f"run {requested.run_id} has no record of that {requested.checkpoint} checkpoint",
        )

    async def predict(self, query: x.Predict) -> x.Predictions | CommandRejected:
        state, _ = await self.repo.get(query.export_id)
        if state is None:
            return CommandRejected(
                code=common.NOT_FOUND, message=f"export {query.export_id} does not exist"
            )
        if state.status != "completed" or state.format != "onnx":
            return CommandRejected(
                code=common.CONFLICT, message="only a completed ONNX export predicts"
            )
        if not query.images:
            return CommandRejected(
                code=common.VALIDATION_ERROR, message="send at least one image", field="images"
            )
        path = self.path(query.export_id, state.file)
        try:
            results = await asyncio.to_thread(
                self.predictor.predict, path, query.images, query.top_k
            )
        except self.engine.BadImage as err:
            return CommandRejected(
                code=common.VALIDATION_ERROR,
                message=f"image {err.index + 1} is not a readable image: {err.reason}",
                field=f"images[{err.index}]",
            )
        return x.Predictions(
            export_id=query.export_id, results=[[(lbl, float(s)) for lbl, s in r] for r in results]
        )

    async def interrupt(self, export_id: str, run_id: str) -> None:
        failed = x.ExportFailed(
            export_id=export_id,
            run_id=run_id,
            code="INTERRUPTED",
            message="the exporter stopped during the export; request it again",
        )
        await self._finish((export_id, run_id), failed)

    async def _finish(self, ids: tuple[str, str], event: x.Event) -> None:
        reply = await self._store(ids[0], None, partial(finish, event=event))
        if isinstance(reply, CommandRejected):
            log.error("export %s: could not store its outcome: %s", ids[0], reply.message)

    async def _store(self, export_id: str, command: Message | None, decide: partial) -> Reply:
        cause = command or Message(actor=self.instance)
        # A request keeps the trace for the outcome; an outcome ends it.
        trace = self.traces.get(export_id, {}) if command else self.traces.pop(export_id, {})
        return await execute(
            self.repo, export_id, cause, decide, headers=trace, refusals=(Refused,), noun="export"
        )


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

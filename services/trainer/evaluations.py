"""Evaluations of a run's checkpoint on a subset of its split, as background jobs.

An Evaluation is an aggregate of its own (started, then completed or failed). It runs on the
CPU in a thread, beside whatever trains on the device, a few at a time. It reads the file its
``CheckpointSaved`` record names (never a fixed path), from a private copy that no pruning by a
training in progress can remove, checked against the recorded sha256 before it is trusted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from nats.js.object_store import ObjectStore

from contracts import Message, common
from contracts import datasets as d
from contracts import training as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.kernel import dataview
from services.kernel.blobstore import BlobStore
from services.kernel.commands import execute
from services.kernel.eventstore import EventStore, check_id
from services.kernel.jobs import Refused, finish_running, start_once
from services.kernel.repository import Repository
from services.trainer import checkpoints
from services.trainer.checkpoints import CheckpointUnavailable
from services.trainer.engine.evaluate import evaluate

log = logging.getLogger(__name__)

#: Evaluations that may run at once on this trainer (each holds a model and a batch).
CONCURRENT = 2


@dataclass(frozen=True)
class Evaluation:
    evaluation_id: str
    run_id: str
    status: str
    instance: str


State = Evaluation | None


def start(state: State, event: c.EvaluationStarted) -> list[c.Event]:
    return start_once(state, event, "evaluation", event.evaluation_id)


def finish(state: State, event: c.Event) -> list[c.Event]:
    return finish_running(state, event, "evaluation")


def evolve(state: State, event: c.Event) -> State:
    match event:
        case c.EvaluationStarted():
            return Evaluation(event.evaluation_id, event.run_id, "running", event.instance)
        case c.EvaluationCompleted():
            return replace(state, status="completed") if state else state
        case c.EvaluationFailed():
            return replace(state, status="failed") if state else state
    return state


class Evaluations:
    def __init__(
        self,
        *,
        evaluations: Repository[State],
        runs: EventStore[c.Event],
        datasets: EventStore[d.Event],
        blobs: BlobStore,
        artifacts: Path,
        objects: ObjectStore,
        instance: str,
    ) -> None:
        self.repo, self.runs, self.datasets = evaluations, runs, datasets
        self.blobs, self.artifacts, self.objects = blobs, artifacts, objects
        self.instance = instance
        self.slots = asyncio.Semaphore(CONCURRENT)
        self.tasks: set[asyncio.Task[None]] = set()
        #: The starting command's trace headers, by evaluation, carried on to its outcome.
        self.traces: dict[str, Mapping[str, str]] = {}

    async def evaluate_run(self, command: c.EvaluateRun, headers: Mapping[str, str]) -> Reply:
        try:
            check_id(command.evaluation_id)
            started, record, samples = await self._checked(command)
        except Refused as err:
            return CommandRejected(code=err.code, message=err.message, field=err.field)
        except ValueError:
            return CommandRejected(code=common.NOT_FOUND, message="that run does not exist")
        self.traces[command.evaluation_id] = dict(headers)
        reply = await self._store(command.evaluation_id, command, partial(start, event=started))
        if isinstance(reply, CommandAccepted) and reply.events:
            task = asyncio.create_task(self._run(started, record, samples))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return reply

    async def _checked(
        self, command: c.EvaluateRun
    ) -> tuple[c.EvaluationStarted, c.CheckpointSaved, list[tuple[str, Path, int]]]:
        if command.checkpoint not in ("best", "last"):
            raise Refused(common.VALIDATION_ERROR, "checkpoint must be best or last", "checkpoint")
        if command.subset not in ("train", "val", "test"):
            raise Refused(common.VALIDATION_ERROR, "subset must be train, val or test", "subset")
        events = [s.event for s in await self.runs.load(command.run_id)]
        queued = next((e for e in events if isinstance(e, c.RunQueued)), None)
        if queued is None:
            raise Refused(common.NOT_FOUND, f"run {command.run_id} does not exist", "run_id")
        saved = [
            e for e in events if isinstance(e, c.CheckpointSaved) and e.kind == command.checkpoint
        ]
        if not saved:
            raise Refused(
                common.CONFLICT, f"run {command.run_id} has no {command.checkpoint} checkpoint yet"
            )
        view = await dataview.load(self.datasets, queued.project_id)
        index = {label: i for i, label in enumerate(queued.classes)}
        samples = [
            (image_id, self.blobs.blob_path(image_id), index[label])
            for image_id, label in view.subset(queued.split_id, command.subset)
            if label in index
        ]
        if not samples:
            raise Refused(
                common.VALIDATION_ERROR,
                f"the split's {command.subset} subset has no images of the run's classes",
                "subset",
            )
        started = c.EvaluationStarted(
            evaluation_id=command.evaluation_id,
            run_id=command.run_id,
            checkpoint=command.checkpoint,
            subset=command.subset,
            images=len(samples),
            checkpoint_epoch=saved[-1].epoch,
            instance=self.instance,
        )
        return started, saved[-1], samples

    async def _run(
        self,
        started: c.EvaluationStarted,
        record: c.CheckpointSaved,
        samples: list[tuple[str, Path, int]],
    ) -> None:
        ids = (started.evaluation_id, started.run_id)
        copy = self.artifacts / started.run_id / f"eval-{started.evaluation_id}.pt"
        async with self.slots:
            try:
                workdir = self.artifacts / started.run_id
                path = await checkpoints.fetch(self.objects, record, workdir, copy)
                result = await asyncio.to_thread(evaluate, path, samples)
            except CheckpointUnavailable as err:
                await self._fail(*ids, err.code, err.message)
                return
            except Exception as exc:
                log.exception("evaluation %s failed", started.evaluation_id)
                await self._fail(*ids, "EVALUATION_FAILED", f"{type(exc).__name__}: {exc}")
                return
            finally:
                copy.unlink(missing_ok=True)
        predictions = [tuple(p) for p in result.pop("predictions", [])]
        done = c.EvaluationCompleted(
            evaluation_id=ids[0],
            run_id=ids[1],
            metrics=result,
            predictions=predictions,
        )
        await self._store(ids[0], None, partial(finish, event=done))

    async def interrupt(self, evaluation_id: str, run_id: str) -> None:
        """An evaluation this instance ran when it stopped: it ends as failed, not running."""
        await self._fail(evaluation_id, run_id, "INTERRUPTED", "the trainer stopped during it")

    async def _fail(self, evaluation_id: str, run_id: str, code: str, message: str) -> None:
        failed = c.EvaluationFailed(
            evaluation_id=evaluation_id, run_id=run_id, code=code, message=message
        )
        await self._store(evaluation_id, None, partial(finish, event=failed))

    async def _store(
        self,
        evaluation_id: str,
        command: Message | None,
        decide: partial,
    ) -> Reply:
        cause = command or Message(actor=self.instance)
        # A start keeps the trace for the outcome; an outcome ends it.
        trace = (
            self.traces.get(evaluation_id, {}) if command else self.traces.pop(evaluation_id, {})
        )
        return await execute(
            self.repo,
            evaluation_id,
            cause,
            decide,
            headers=trace,
            refusals=(Refused,),
            noun="evaluation",
        )

"""Evaluations of a run's checkpoint on a subset of its split, as background jobs: the I/O
around the Evaluation decider (``domain.evaluation``): load, decide, append, and hand the job to
the kernel's job runner, which stores its outcome in the trace of the command that started it.

It runs on the CPU in a thread, beside whatever trains on the device, a few at a time. It reads
the file its ``CheckpointSaved`` record names (never a fixed path), from a private copy that no
pruning by a training in progress can remove, checked against the recorded sha256 before it is
trusted. The checkpoint's model says how it is scored (``engine.evaluate``): a classifier by
accuracy and its confusion matrix, a detector by COCO's mAP over each image's true boxes (none:
a negative), with its worst images.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import partial, reduce
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import common
from contracts import training as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.kernel.commands import execute, rejected
from services.kernel.domain import DomainError
from services.kernel.eventstore import check_id
from services.kernel.jobs import runner
from services.kernel.jobs.runner import JobRunner, Outcomes
from services.kernel.projection import ProjectionRunner
from services.kernel.repository import Repository
from services.trainer.checkpoints import CheckpointFiles
from services.trainer.domain import evaluation
from services.trainer.domain import run as runs
from services.trainer.images import Listing, SplitImages
from services.trainer.metrics import evaluation_ended

#: Evaluations that may run at once on this trainer (each holds a model and a batch).
CONCURRENT = 2

#: How an evaluation ends: its outcome decided by the Evaluation decider, its failures as
#: ``EvaluationFailed``.
OUTCOMES: Outcomes[evaluation.State, c.Event] = Outcomes(
    noun=evaluation.EVALUATION.noun,
    finish=evaluation.finish,
    failed=lambda evaluation_id, run_id, failure: c.EvaluationFailed(
        evaluation_id=evaluation_id, run_id=run_id, code=failure.code, message=failure.message
    ),
    crash="EVALUATION_FAILED",
)


class Evaluations:
    def __init__(
        self,
        evaluations: Repository[evaluation.State],
        *,
        images: SplitImages,
        files: CheckpointFiles,
        instance: str,
    ) -> None:
        # an evaluation is decided against the run it measures, in the run's own stream
        self.repo, self.runs = evaluations, evaluations.store
        self.images, self.files, self.instance = images, files, instance
        self.jobs = JobRunner(evaluations, OUTCOMES, instance=instance, slots=CONCURRENT)

    async def evaluate_run(self, command: c.EvaluateRun, headers: Mapping[str, str]) -> Reply:
        try:
            check_id(command.evaluation_id)
            evaluation.check(command)  # before anything is read for it
            run = await self._run_of(command.run_id)
            record = evaluation.checkpoint(run, command)
            assert run is not None  # checkpoint() refuses a run that does not exist
            # the subset (checked by evaluation.check) as it is now; NOT_FOUND without the split
            # (listed only: the job fetches the files this trainer does not have yet)
            listing = await self.images.listed(run.queued, command.subset)  # type: ignore[arg-type]
        except DomainError as err:
            return rejected(err)
        except ValueError:
            return CommandRejected(code=common.NOT_FOUND, message="that run does not exist")
        decide = partial(
            evaluation.start,
            command=command,
            run=run,
            images=len(listing.images),
            instance=self.instance,
        )
        reply = await execute(
            self.repo,
            command.evaluation_id,
            command,
            decide,
            headers=headers,
            refusals=(DomainError,),
            noun=evaluation.EVALUATION.noun,
        )
        if isinstance(reply, CommandAccepted) and reply.events:
            work = partial(self._measured, command.evaluation_id, command.run_id, record, listing)
            self.jobs.start(runner.Job(command.evaluation_id, command.run_id, work, headers))
        return reply

    async def _run_of(self, run_id: str) -> runs.State:
        stored = await self.runs.load(run_id)
        return reduce(runs.evolve, [s.event for s in stored], None)

    async def _measured(
        self, evaluation_id: str, run_id: str, record: c.CheckpointSaved, samples: Listing
    ) -> c.Event:
        """The job's work, timed and counted by how it ended (``studio_evaluation*``)."""
        started, outcome = time.monotonic(), "failed"
        try:
            result = await self._evaluate(evaluation_id, run_id, record, samples)
            outcome = "completed"
            return result
        finally:
            evaluation_ended(outcome, time.monotonic() - started)

    async def _evaluate(
        self, evaluation_id: str, run_id: str, record: c.CheckpointSaved, listing: Listing
    ) -> c.Event:
        """The job's work: a private copy of the recorded checkpoint, measured in a thread.
        A checkpoint gone or not the recorded file is refused with its code by ``fetch``."""
        copy = self.files.workdir(run_id) / f"eval-{evaluation_id}.pt"
        try:
            path = await self.files.fetch(record, copy)
            fetched = await self.images.fetched(listing)
            # Each image with its true boxes: a detector is scored by them (none: a negative),
            # a classifier's evaluation reads the label and leaves them.
            samples = [(i, p, label, listing.boxes.get(i, ())) for i, p, label in fetched]
            result = await asyncio.to_thread(_evaluate, path, samples)
        finally:
            copy.unlink(missing_ok=True)
        predictions = [tuple(p) for p in result.pop("predictions", [])]
        return c.EvaluationCompleted(
            evaluation_id=evaluation_id, run_id=run_id, metrics=result, predictions=predictions
        )

    async def interrupt(self, evaluation_id: str, run_id: str) -> None:
        """An evaluation this instance ran when it stopped: it ends as failed, not running."""
        await self.jobs.interrupt(evaluation_id, run_id, evaluation.INTERRUPTED)

    async def reap(self, read_model: ProjectionRunner, db: AsyncEngine) -> None:
        """Ends as interrupted the evaluations this instance left running when it stopped."""
        await self.jobs.reap(read_model, db, evaluation.INTERRUPTED)


def _evaluate(path: Path, samples: list[Any]) -> dict[str, Any]:
    """``engine.evaluate``, imported (torchvision with it) by the first evaluation, in its
    thread: a trainer starts without it."""
    from services.trainer.engine.evaluate import evaluate

    return evaluate(path, samples)

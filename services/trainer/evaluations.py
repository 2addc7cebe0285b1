"""Evaluations of a run's checkpoint on a subset of its split, as background jobs: the I/O
around the Evaluation decider (``domain.evaluation``): load, decide, append, run the job.

It runs on the CPU in a thread, beside whatever trains on the device, a few at a time. It reads
the file its ``CheckpointSaved`` record names (never a fixed path), from a private copy that no
pruning by a training in progress can remove, checked against the recorded sha256 before it is
trusted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial, reduce
from pathlib import Path

from nats.js.object_store import ObjectStore

from contracts import Message, common
from contracts import datasets as d
from contracts import training as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.kernel.blobstore import BlobStore
from services.kernel.commands import execute, rejected
from services.kernel.domain import DomainError
from services.kernel.eventstore import EventStore, check_id
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.transient import TRANSIENT
from services.trainer import checkpoints
from services.trainer.checkpoints import CheckpointUnavailable
from services.trainer.domain import evaluation
from services.trainer.domain import run as runs
from services.trainer.engine.evaluate import evaluate

log = logging.getLogger(__name__)

#: Evaluations that may run at once on this trainer (each holds a model and a batch).
CONCURRENT = 2
Samples = list[tuple[str, Path, int]]


class Evaluations:
    def __init__(
        self,
        *,
        evaluations: Repository[evaluation.State],
        runs: EventStore[c.Event],
        datasets: PagedQuery[d.SubsetItem],
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
            evaluation.check(command)  # before anything is read for it
            run = await self._run_of(command.run_id)
            record = evaluation.checkpoint(run, command)
            assert run is not None  # checkpoint() refuses a run that does not exist
            samples = await self._samples(run.queued, command.subset)
        except DomainError as err:
            return rejected(err)
        except ValueError:
            return CommandRejected(code=common.NOT_FOUND, message="that run does not exist")
        decide = partial(
            evaluation.start,
            command=command,
            run=run,
            images=len(samples),
            instance=self.instance,
        )
        reply = await self._store(command.evaluation_id, decide, headers, command)
        if isinstance(reply, CommandAccepted) and reply.events:
            # Its outcome is stored under the trace of the command that started it.
            self.traces[command.evaluation_id] = dict(headers)
            job = self._run(command.evaluation_id, command.run_id, record, samples)
            task = asyncio.create_task(job)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return reply

    async def _run_of(self, run_id: str) -> runs.State:
        stored = await self.runs.load(run_id)
        return reduce(runs.evolve, [s.event for s in stored], None)

    async def _samples(self, queued: c.RunQueued, subset: str) -> Samples:
        """The subset's images of the run's classes: id, file, class index, as the datasets
        service has them now; ``Refused`` NOT_FOUND when the split no longer exists."""
        index = {label: i for i, label in enumerate(queued.classes)}
        query = d.GetSubset(
            dataset_id=queued.project_id,
            split_id=queued.split_id,
            subset=subset,  # type: ignore[arg-type]  # checked by evaluation.check
        )
        return [
            (item.image_id, self.blobs.blob_path(item.blob), index[item.label])
            for item in await self.datasets(query)
            if item.label in index
        ]

    async def _run(
        self, evaluation_id: str, run_id: str, record: c.CheckpointSaved, samples: Samples
    ) -> None:
        copy = self.artifacts / run_id / f"eval-{evaluation_id}.pt"
        async with self.slots:
            try:
                path = await checkpoints.fetch(self.objects, record, self.artifacts / run_id, copy)
                result = await asyncio.to_thread(evaluate, path, samples)
            except CheckpointUnavailable as err:
                await self._fail(evaluation_id, run_id, err.code, err.message)
                return
            except TRANSIENT as exc:  # past the Object Store's retries: not the model's fault
                log.warning("evaluation %s: NATS unreachable (%r)", evaluation_id, exc)
                message = f"NATS was unreachable ({type(exc).__name__}); evaluate again later"
                await self._fail(evaluation_id, run_id, common.UNAVAILABLE, message)
                return
            except Exception as exc:  # evaluating (torch) fails in many ways: the job says why
                log.exception("evaluation %s failed", evaluation_id)
                await self._fail(
                    evaluation_id, run_id, "EVALUATION_FAILED", f"{type(exc).__name__}: {exc}"
                )
                return
            finally:
                copy.unlink(missing_ok=True)
        predictions = [tuple(p) for p in result.pop("predictions", [])]
        done = c.EvaluationCompleted(
            evaluation_id=evaluation_id, run_id=run_id, metrics=result, predictions=predictions
        )
        await self._end(evaluation_id, done)

    async def interrupt(self, evaluation_id: str, run_id: str) -> None:
        """An evaluation this instance ran when it stopped: it ends as failed, not running."""
        await self._fail(evaluation_id, run_id, "INTERRUPTED", "the trainer stopped during it")

    async def _fail(self, evaluation_id: str, run_id: str, code: str, message: str) -> None:
        failed = c.EvaluationFailed(
            evaluation_id=evaluation_id, run_id=run_id, code=code, message=message
        )
        await self._end(evaluation_id, failed)

    async def _end(self, evaluation_id: str, outcome: c.Event) -> None:
        """Store its outcome under its start's trace, which ends with it."""
        decide = partial(evaluation.finish, event=outcome)
        await self._store(evaluation_id, decide, self.traces.pop(evaluation_id, {}))

    async def _store(
        self,
        evaluation_id: str,
        decide: Callable[[evaluation.State], Sequence[c.Event]],
        headers: Mapping[str, str],
        command: Message | None = None,
    ) -> Reply:
        cause = command or Message(actor=self.instance)
        return await execute(
            self.repo,
            evaluation_id,
            cause,
            decide,
            headers=headers,
            refusals=(DomainError,),
            noun="evaluation",
        )

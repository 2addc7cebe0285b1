"""What the searches' driver reads and writes: the experiments, their trials' runs, and each
experiment's ``Search`` as of a position of its log.

A ``Search`` is kept per experiment with the position of the experiment's last event it has
heard; when the experiment moved on without this instance (another trainer took a step), it is
rebuilt from the log: the experiment's trial events and its trials' epochs, in stream order.
Steps are stored under message ids derived from the step, so a step retried after a crash is
stored once. Imports ``contracts``, the kernel, the trainer's domain and its ``search``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import msgspec

from contracts import experiments as x
from contracts import training as c
from contracts.common import CommandRejected, Reply
from contracts.envelope import Message
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.repository import EventStorePort, Repository
from services.trainer import domain as runs
from services.trainer.domain import experiment as domain
from services.trainer.search import Search

#: The headers of the event the driver is handling: what it stores in answer belongs to that
#: event's trace and request (set by the driver around each event).
CAUSE_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("cause_headers", default=None)

log = logging.getLogger(__name__)
#: What rebuilds a search: the trials' events and their runs' epochs.
HISTORY = (x.TrialStarted, x.TrialPruned, x.TrialCompleted, x.TrialFailed, c.EpochCompleted)


class LogStore(EventStorePort, Protocol):
    """The TRAINING stream's store (JetStream's, or the in-memory one in unit tests)."""

    def decode(self, data: bytes) -> Any: ...


class ExperimentLog:
    def __init__(
        self,
        store: LogStore,
        experiments: Repository[domain.State],
        runs_repo: Repository[runs.State],
    ) -> None:
        self.store, self.experiments, self.runs = store, experiments, runs_repo
        #: experiment id → (the position of its last event the search has heard, the search)
        self.searches: dict[str, tuple[int, Search]] = {}

    async def trial_of(self, run_id: str) -> tuple[domain.Experiment, domain.Trial] | None:
        run, _ = await self.runs.get(run_id)
        if run is None:
            return None
        experiment = (await self.experiments.load(run.queued.experiment_id)).state
        trial = experiment.trial_of(run_id) if experiment is not None else None
        return None if experiment is None or trial is None else (experiment, trial)

    async def measured(self, run_id: str) -> dict[str, float]:
        """What the run measured: its best epoch's accuracy and loss (and a detector's mAP),
        its parameters and its latency (``RunCompleted``); a measurement it lacks is left out."""
        stored = [s.event for s in await self.store.load(run_id)]
        done = next((e for e in reversed(stored) if isinstance(e, c.RunCompleted)), None)
        if done is None:
            return {}
        values = {"val_accuracy": done.best_val_accuracy}
        best = [e for e in stored if isinstance(e, c.EpochCompleted) and e.epoch == done.best_epoch]
        if best:
            values["val_loss"] = best[-1].val_loss
        if done.params is not None:
            values["params"] = float(done.params)
        if done.latency_ms is not None:
            values["latency_ms"] = done.latency_ms
        if done.best_val_map is not None:
            values["val_map"] = done.best_val_map
        return values

    async def search(self, experiment: domain.Experiment, position: int) -> Search:
        """The experiment's search as of ``position``, rebuilt from the log when this instance
        has not heard everything up to there."""
        cached = self.searches.get(experiment.experiment_id)
        if cached is not None and cached[0] == position:
            return cached[1]
        search = Search(experiment.spec)
        search.rebuild(await self.history(experiment))
        self.searches[experiment.experiment_id] = (position, search)
        return search

    async def history(self, experiment: domain.Experiment) -> list[Any]:
        """The experiment's trial events and its trials' epochs, in stream order."""
        stored = list(await self.store.load(experiment.experiment_id))
        loads = [self.store.load(t.run_id) for t in experiment.trials.values()]
        for events in await asyncio.gather(*loads):
            stored += [s for s in events if isinstance(s.event, c.EpochCompleted)]
        stored.sort(key=lambda s: s.sequence)
        return [s.event for s in stored if isinstance(s.event, HISTORY)]

    async def decide(
        self,
        experiment_id: str,
        step: str,
        decide: Callable[[domain.State], Sequence[x.Event]],
        cause: Message,
    ) -> Reply:
        """Stores what ``decide`` decides, under message ids derived from the step, so that a
        step retried after a crash is stored once; a refusal drops the cached search."""
        command = msgspec.structs.replace(cause, message_id=f"{experiment_id}-{step}")
        reply = await execute(
            self.experiments,
            experiment_id,
            command,
            decide,
            headers=CAUSE_HEADERS.get() or {},
            refusals=(DomainError,),
            noun="experiment",
        )
        if isinstance(reply, CommandRejected):
            self.searches.pop(experiment_id, None)
            log.info("experiment %s: %s not stored: %s", experiment_id, step, reply.message)
        return reply

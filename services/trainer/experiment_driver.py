"""The driver of the searches: it turns each event of the TRAINING stream (handed over by
``experiment_consumer``, one at a time, to one trainer instance) into the next step of its
experiment.

- ExperimentCreated, ExperimentResumed, TrialCompleted/Pruned/Failed → start trials while fewer
  than ``max_trials`` were started, fewer than ``max_concurrent_trials`` run and the wall time
  is not over (ask the search → store ``TrialStarted`` → ``StartRun``); when none runs and none
  may start, ``ExperimentCompleted``.
- a trial's ``EpochCompleted`` → the search hears it → ``TrialPruned`` (its run is then stopped).
- a trial's ``RunCompleted`` / ``RunFailed`` / ``RunStopped`` / ``RunInterrupted`` (not resumed by
  itself) → ``TrialCompleted`` (with ``FrontUpdated``) or ``TrialFailed``; a ``macro_f1``
  objective first asks for an evaluation on ``val`` and completes the trial on its outcome.
- ExperimentStopped → its trials' runs are stopped (a queued one is dropped); on resume they
  continue from their checkpoints.

The search's state is the log: a ``Search`` is rebuilt from the experiment's events and its
trials' epochs whenever the experiment moved on without this instance. Every step is
idempotent, so a redelivered event does no harm: trial run ids derive from the trial, the
experiment refuses a second start of a number, stored events carry derived message ids.
Commands of this service are called in-process. Imports ``contracts``, the kernel, the trainer's
domain, its ``search`` and ``experiment_log``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from contracts import common
from contracts import experiments as x
from contracts import training as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from contracts.envelope import Message
from services.kernel.repository import Repository
from services.trainer import domain as runs
from services.trainer.domain import experiment as domain
from services.trainer.experiment_log import CAUSE_HEADERS, ExperimentLog, LogStore
from services.trainer.experiments import Handler
from services.trainer.search import Search

log = logging.getLogger(__name__)


class Driver:
    def __init__(
        self,
        store: LogStore,
        experiments: Repository[domain.State],
        runs_repo: Repository[runs.State],
        commands: Mapping[type, Handler],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = ExperimentLog(store, experiments, runs_repo)
        self.commands, self.clock = commands, clock

    # --- what each event does ----------------------------------------------------------------

    async def handle(self, event: Any, headers: Mapping[str, str]) -> None:
        token = CAUSE_HEADERS.set(headers)
        try:
            await self._handle(event, headers)
        finally:
            CAUSE_HEADERS.reset(token)

    async def _handle(self, event: Any, headers: Mapping[str, str]) -> None:
        match event:
            case x.ExperimentCreated() | x.TrialCompleted() | x.TrialFailed():
                await self.advance(event.experiment_id, event)
            case x.TrialPruned():
                await self._stop_run(event.run_id, headers)
                await self.advance(event.experiment_id, event)
            case x.ExperimentStopped():
                await self._stop_trials(event.experiment_id, headers)
            case x.ExperimentResumed():
                await self._resume_trials(event, headers)
                await self.advance(event.experiment_id, event)
            case c.EpochCompleted():
                await self._on_epoch(event)
            case c.RunCompleted() | c.RunFailed() | c.RunStopped() | c.RunInterrupted():
                await self._on_run_end(event, headers)
            case c.EvaluationCompleted() | c.EvaluationFailed():
                await self._on_evaluation(event)

    async def advance(self, experiment_id: str, cause: Message) -> None:
        """Starts what may start; completes the experiment when nothing runs or may start."""
        loaded = await self.log.experiments.load(experiment_id)
        if loaded.state is None or loaded.state.status != domain.RUNNING:
            return
        await self._ensure_runs(loaded.state, cause)
        while True:
            loaded = await self.log.experiments.load(experiment_id)
            experiment = loaded.state
            if experiment is None or experiment.status != domain.RUNNING:
                return
            reason = self._over(experiment)
            if reason is not None:
                await self.log.decide(experiment_id, "completed", partial_complete(reason), cause)
                return
            if not self._may_start(experiment):
                return
            if not await self._start_next(experiment, loaded.position, cause):
                return

    # --- starting trials ----------------------------------------------------------------------

    def _wall_over(self, experiment: domain.Experiment) -> bool:
        wall = experiment.spec.budget.wall_time_s
        if wall is None:
            return False
        return (self.clock() - experiment.spec.occurred_at).total_seconds() >= wall

    def _may_start(self, experiment: domain.Experiment) -> bool:
        spec = experiment.spec
        return (
            len(experiment.trials) < spec.max_trials
            and len(experiment.running) < spec.budget.max_concurrent_trials
            and not self._wall_over(experiment)
        )

    def _over(self, experiment: domain.Experiment) -> str | None:
        if experiment.running:
            return None
        if len(experiment.trials) >= experiment.spec.max_trials:
            return "max_trials"
        return "wall_time" if self._wall_over(experiment) else None

    async def _start_next(
        self, experiment: domain.Experiment, position: int, cause: Message
    ) -> bool:
        """Asks the search for a trial, stores it, queues its run; False when it could not."""
        search = await self.log.search(experiment, position)
        number, params = search.ask()

        def decide(state: domain.State) -> list[x.Event]:
            return domain.start_trial(state, number, params)

        reply = await self.log.decide(experiment.experiment_id, f"trial-{number}", decide, cause)
        if not isinstance(reply, CommandAccepted):
            return False
        self.log.searches[experiment.experiment_id] = (reply.sequence, search)
        started = (await self.log.experiments.load(experiment.experiment_id)).state
        assert started is not None
        await self._start_run(started, started.trials[number], cause)
        return True

    async def _ensure_runs(self, experiment: domain.Experiment, cause: Message) -> None:
        """A trial stored without its run (a crash between the two) gets its run now."""
        for trial in experiment.running:
            state, _ = await self.log.runs.get(trial.run_id)
            if state is None:
                await self._start_run(experiment, trial, cause)

    async def _start_run(
        self, experiment: domain.Experiment, trial: domain.Trial, cause: Message
    ) -> None:
        spec = experiment.spec
        hyper = dict(trial.params) | {
            "epochs": spec.budget.epochs_per_trial,
            "seed": (spec.seed + trial.number) % (2**63),
        }
        try:
            hyperparameters = msgspec.convert(hyper, c.HyperparametersIn)
        except msgspec.ValidationError as err:
            await self._fail(experiment.experiment_id, trial.number, "INVALID_TRIAL", str(err))
            return
        command = c.StartRun(
            run_id=trial.run_id,
            experiment_id=spec.experiment_id,
            project_id=spec.project_id,
            split_id=spec.split_id,
            hyperparameters=hyperparameters,
            message_id=f"{trial.run_id}-start",
            correlation_id=cause.correlation_id,
            actor=spec.actor,
        )
        reply = await self._call(command)
        if isinstance(reply, CommandRejected) and reply.code != common.CONFLICT:
            await self._fail(experiment.experiment_id, trial.number, reply.code, reply.message)

    # --- hearing the trials' runs -------------------------------------------------------------

    async def _on_epoch(self, event: c.EpochCompleted) -> None:
        found = await self.log.trial_of(event.run_id)
        if found is None or not found[1].running or found[0].status != domain.RUNNING:
            return
        experiment, trial = found
        loaded = await self.log.experiments.load(experiment.experiment_id)
        search = await self.log.search(experiment, loaded.position)
        value = search.epoch_value(event)
        if value is None or not search.report(trial.number, event.epoch, value):
            return
        search.tell(trial.number, None, "pruned")

        def decide(state: domain.State) -> list[x.Event]:
            return domain.prune(state, trial.number, event.epoch, value)

        await self._end(experiment.experiment_id, trial.number, "pruned", decide, search, event)

    async def _on_run_end(self, event: Any, headers: Mapping[str, str]) -> None:
        found = await self.log.trial_of(event.run_id)
        if found is None or not found[1].running:
            return
        experiment, trial = found
        match event:
            case c.RunCompleted():
                await self._completed(experiment, trial, headers)
            case c.RunFailed():
                await self._fail(experiment.experiment_id, trial.number, event.code, event.message)
            case c.RunStopped() if experiment.status == domain.RUNNING:
                await self._stopped(experiment, trial, headers)
            case c.RunInterrupted():
                run, _ = await self.log.runs.get(event.run_id)
                if run is not None and run.status == runs.INTERRUPTED:  # not back in the queue
                    code = "INTERRUPTED"
                    await self._fail(experiment.experiment_id, trial.number, code, event.reason)

    async def _stopped(
        self, experiment: domain.Experiment, trial: domain.Trial, headers: Mapping[str, str]
    ) -> None:
        """Its run stopped while the search runs: the search's stop, ending after a quick
        resume, continues it; someone's stop of the run itself fails the trial."""
        if trial.paused:
            await self._resume_run(experiment, trial, headers)
            return
        message = "its run was stopped"
        await self._fail(experiment.experiment_id, trial.number, "STOPPED", message)

    async def _completed(
        self, experiment: domain.Experiment, trial: domain.Trial, headers: Mapping[str, str]
    ) -> None:
        metrics = [o.metric for o in experiment.spec.objectives]
        if "macro_f1" in metrics:
            await self._evaluate(experiment, trial, headers)
            return
        await self._complete_with(experiment, trial, await self.log.measured(trial.run_id))

    async def _evaluate(
        self, experiment: domain.Experiment, trial: domain.Trial, headers: Mapping[str, str]
    ) -> None:
        command = c.EvaluateRun(
            evaluation_id=evaluation_id(experiment.experiment_id, trial.number),
            run_id=trial.run_id,
            checkpoint="best",
            subset="val",
            message_id=f"{trial.run_id}-evaluate",
        )
        reply = await self._call(command, headers)
        if isinstance(reply, CommandRejected) and "already" not in reply.message:
            await self._fail(experiment.experiment_id, trial.number, reply.code, reply.message)

    async def _on_evaluation(self, event: c.EvaluationCompleted | c.EvaluationFailed) -> None:
        found = await self.log.trial_of(event.run_id)
        if found is None or not found[1].running:
            return
        experiment, trial = found
        if event.evaluation_id != evaluation_id(experiment.experiment_id, trial.number):
            return  # someone's own evaluation of the run
        if isinstance(event, c.EvaluationFailed):
            await self._fail(experiment.experiment_id, trial.number, event.code, event.message)
            return
        values = await self.log.measured(trial.run_id)
        macro = event.metrics.get("macro")
        if isinstance(macro, dict) and isinstance(macro.get("f1"), int | float):
            values["macro_f1"] = float(macro["f1"])
        await self._complete_with(experiment, trial, values)

    async def _complete_with(
        self, experiment: domain.Experiment, trial: domain.Trial, values: dict[str, float]
    ) -> None:
        missing = [o.metric for o in experiment.spec.objectives if o.metric not in values]
        if missing:
            message = f"its run measured no {', '.join(missing)}"
            await self._fail(experiment.experiment_id, trial.number, "METRIC_MISSING", message)
            return
        loaded = await self.log.experiments.load(experiment.experiment_id)
        search = await self.log.search(experiment, loaded.position)
        search.tell(trial.number, values, "completed")

        def decide(state: domain.State) -> list[x.Event]:
            return domain.complete_trial(state, trial.number, values)

        cause = experiment.spec
        await self._end(experiment.experiment_id, trial.number, "completed", decide, search, cause)

    async def _fail(self, experiment_id: str, number: int, code: str, message: str) -> None:
        loaded = await self.log.experiments.load(experiment_id)
        if loaded.state is None:
            return
        search = await self.log.search(loaded.state, loaded.position)
        search.tell(number, None, "failed")

        def decide(state: domain.State) -> list[x.Event]:
            return domain.fail_trial(state, number, code, message)

        await self._end(experiment_id, number, "failed", decide, search, loaded.state.spec)

    async def _end(
        self,
        experiment_id: str,
        number: int,
        outcome: str,
        decide: Callable[[domain.State], list[x.Event]],
        search: Search,
        cause: Message,
    ) -> None:
        """A trial's end and the front it leaves, stored together."""
        front, best, importances = search.front(), search.best(), search.importances()

        def ended(state: domain.State) -> list[x.Event]:
            end = decide(state)
            after = domain.evolve(state, end[0])
            return [*end, *domain.update_front(after, front, best, importances)]

        reply = await self.log.decide(experiment_id, f"trial-{number}-{outcome}", ended, cause)
        if isinstance(reply, CommandAccepted):
            self.log.searches[experiment_id] = (reply.sequence, search)

    # --- stopping and resuming ----------------------------------------------------------------

    async def _stop_trials(self, experiment_id: str, headers: Mapping[str, str]) -> None:
        experiment = (await self.log.experiments.load(experiment_id)).state
        if experiment is None or experiment.status != domain.STOPPED:
            return
        for trial in experiment.running:
            await self._stop_run(trial.run_id, headers)

    async def _stop_run(self, run_id: str, headers: Mapping[str, str]) -> None:
        run, _ = await self.log.runs.get(run_id)
        if run is not None and run.status in (runs.QUEUED, runs.RUNNING):
            await self._call(c.StopRun(run_id=run_id), headers)

    async def _resume_trials(self, event: x.ExperimentResumed, headers: Mapping[str, str]) -> None:
        """Trials the stop paused go on from their last checkpoint."""
        experiment = (await self.log.experiments.load(event.experiment_id)).state
        if experiment is None or experiment.status != domain.RUNNING:
            return
        for trial in experiment.running:
            await self._resume_run(experiment, trial, headers)

    async def _resume_run(
        self, experiment: domain.Experiment, trial: domain.Trial, headers: Mapping[str, str]
    ) -> None:
        """The trial's run, stopped (or interrupted), back in the queue after its checkpoint;
        a run still stopping is resumed when its ``RunStopped`` comes (``_stopped``)."""
        run, _ = await self.log.runs.get(trial.run_id)
        if run is None or run.status not in (runs.STOPPED, runs.INTERRUPTED):
            return
        if run.epochs_done >= run.epochs:  # stopped after its last epoch: nothing to train
            message = "its run was stopped after its last epoch"
            await self._fail(experiment.experiment_id, trial.number, "STOPPED", message)
            return
        reply = await self._call(c.ResumeRun(run_id=trial.run_id), headers)
        if isinstance(reply, CommandRejected):
            await self._fail(experiment.experiment_id, trial.number, reply.code, reply.message)

    async def _call(self, command: Message, headers: Mapping[str, str] | None = None) -> Reply:
        reply = await self.commands[type(command)](command, headers or {})
        if isinstance(reply, CommandRejected) and reply.code == common.UNAVAILABLE:
            raise RuntimeError(f"{type(command).__name__}: {reply.message}")  # redelivered
        return reply


def partial_complete(reason: str) -> Callable[[domain.State], list[x.Event]]:
    def decide(state: domain.State) -> list[x.Event]:
        return domain.complete(state, reason)

    return decide


EVALUATIONS = uuid.UUID("0b7f3c52-1f5e-5d0e-8a51-2c4f0e6d9a13")


def evaluation_id(experiment_id: str, trial: int) -> str:
    """The id of the ``val`` evaluation that measures a trial's ``macro_f1``."""
    return uuid.uuid5(EVALUATIONS, f"{experiment_id}/{trial}").hex

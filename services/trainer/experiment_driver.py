"""The driver of the searches: one durable consumer of the TRAINING stream, shared by every
trainer instance (so each event is handled by one of them), that turns events into the next step
of each experiment.

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
domain and its ``search``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import NotFoundError

from contracts import common
from contracts import experiments as x
from contracts import training as c
from contracts.common import CommandAccepted, CommandRejected, Reply
from contracts.envelope import Message
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.eventstore import EventStore
from services.kernel.repository import Repository
from services.trainer import domain as runs
from services.trainer.domain import experiment as domain
from services.trainer.experiments import Handler
from services.trainer.search import Search

log = logging.getLogger(__name__)

#: Not per instance: every trainer pulls from the one consumer, so one of them handles each event.
DURABLE = "trainer-experiments"
#: Deliveries of one event before it is given up (logged): a bug must not stall every search.
MAX_DELIVERIES = 20
RETRY_DELAY_S = 1.0
#: One event at a time, in stream order, across every instance.
MAX_ACK_PENDING = 1
ACK_WAIT_S = 30.0


class Driver:
    def __init__(
        self,
        store: EventStore[Any],
        experiments: Repository[domain.State],
        runs_repo: Repository[runs.State],
        commands: Mapping[type, Handler],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store, self.experiments, self.runs = store, experiments, runs_repo
        self.commands, self.clock = commands, clock
        #: experiment id → (its position the search has heard, the search)
        self._searches: dict[str, tuple[int, Search]] = {}

    # --- what each event does ----------------------------------------------------------------

    async def handle(self, event: Any, headers: Mapping[str, str]) -> None:
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
        loaded = await self.experiments.load(experiment_id)
        if loaded.state is None or loaded.state.status != domain.RUNNING:
            return
        await self._ensure_runs(loaded.state, cause)
        while True:
            loaded = await self.experiments.load(experiment_id)
            experiment = loaded.state
            if experiment is None or experiment.status != domain.RUNNING:
                return
            reason = self._over(experiment)
            if reason is not None:
                await self._decide(experiment_id, "completed", partial_complete(reason), cause)
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
        search = await self._search(experiment, position)
        number, params = search.ask()

        def decide(state: domain.State) -> list[x.Event]:
            return domain.start_trial(state, number, params)

        reply = await self._decide(experiment.experiment_id, f"trial-{number}", decide, cause)
        if not isinstance(reply, CommandAccepted):
            return False
        self._searches[experiment.experiment_id] = (reply.sequence, search)
        started = (await self.experiments.load(experiment.experiment_id)).state
        assert started is not None
        await self._start_run(started, started.trials[number], cause)
        return True

    async def _ensure_runs(self, experiment: domain.Experiment, cause: Message) -> None:
        """A trial stored without its run (a crash between the two) gets its run now."""
        for trial in experiment.running:
            state, _ = await self.runs.get(trial.run_id)
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

    async def _trial_of(self, run_id: str) -> tuple[domain.Experiment, domain.Trial] | None:
        run, _ = await self.runs.get(run_id)
        if run is None:
            return None
        experiment = (await self.experiments.load(run.queued.experiment_id)).state
        trial = experiment.trial_of(run_id) if experiment is not None else None
        return None if experiment is None or trial is None else (experiment, trial)

    async def _on_epoch(self, event: c.EpochCompleted) -> None:
        found = await self._trial_of(event.run_id)
        if found is None or not found[1].running or found[0].status != domain.RUNNING:
            return
        experiment, trial = found
        loaded = await self.experiments.load(experiment.experiment_id)
        search = await self._search(experiment, loaded.position)
        value = search.epoch_value(event)
        if value is None or not search.report(trial.number, event.epoch, value):
            return
        search.tell(trial.number, None, "pruned")

        def decide(state: domain.State) -> list[x.Event]:
            return domain.prune(state, trial.number, event.epoch, value)

        await self._end(experiment.experiment_id, trial.number, "pruned", decide, search, event)

    async def _on_run_end(self, event: Any, headers: Mapping[str, str]) -> None:
        found = await self._trial_of(event.run_id)
        if found is None or not found[1].running:
            return
        experiment, trial = found
        match event:
            case c.RunCompleted():
                await self._completed(experiment, trial, headers)
            case c.RunFailed():
                await self._fail(experiment.experiment_id, trial.number, event.code, event.message)
            case c.RunStopped() if experiment.status == domain.RUNNING:
                message = "its run was stopped"
                await self._fail(experiment.experiment_id, trial.number, "STOPPED", message)
            case c.RunInterrupted():
                run, _ = await self.runs.get(event.run_id)
                if run is not None and run.status == runs.INTERRUPTED:  # not back in the queue
                    code = "INTERRUPTED"
                    await self._fail(experiment.experiment_id, trial.number, code, event.reason)

    async def _completed(
        self, experiment: domain.Experiment, trial: domain.Trial, headers: Mapping[str, str]
    ) -> None:
        metrics = [o.metric for o in experiment.spec.objectives]
        if "macro_f1" in metrics:
            await self._evaluate(experiment, trial, headers)
            return
        await self._complete_with(experiment, trial, await self._measured(trial.run_id))

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
        found = await self._trial_of(event.run_id)
        if found is None or not found[1].running:
            return
        experiment, trial = found
        if event.evaluation_id != evaluation_id(experiment.experiment_id, trial.number):
            return  # someone's own evaluation of the run
        if isinstance(event, c.EvaluationFailed):
            await self._fail(experiment.experiment_id, trial.number, event.code, event.message)
            return
        values = await self._measured(trial.run_id)
        macro = event.metrics.get("macro")
        if isinstance(macro, dict) and isinstance(macro.get("f1"), int | float):
            values["macro_f1"] = float(macro["f1"])
        await self._complete_with(experiment, trial, values)

    async def _measured(self, run_id: str) -> dict[str, float]:
        """What the run measured: its best epoch's accuracy and loss, its parameters and its
        latency (``RunCompleted``); a measurement it lacks is left out."""
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
        return values

    async def _complete_with(
        self, experiment: domain.Experiment, trial: domain.Trial, values: dict[str, float]
    ) -> None:
        missing = [o.metric for o in experiment.spec.objectives if o.metric not in values]
        if missing:
            message = f"its run measured no {', '.join(missing)}"
            await self._fail(experiment.experiment_id, trial.number, "METRIC_MISSING", message)
            return
        loaded = await self.experiments.load(experiment.experiment_id)
        search = await self._search(experiment, loaded.position)
        search.tell(trial.number, values, "completed")

        def decide(state: domain.State) -> list[x.Event]:
            return domain.complete_trial(state, trial.number, values)

        cause = experiment.spec
        await self._end(experiment.experiment_id, trial.number, "completed", decide, search, cause)

    async def _fail(self, experiment_id: str, number: int, code: str, message: str) -> None:
        loaded = await self.experiments.load(experiment_id)
        if loaded.state is None:
            return
        search = await self._search(loaded.state, loaded.position)
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

        reply = await self._decide(experiment_id, f"trial-{number}-{outcome}", ended, cause)
        if isinstance(reply, CommandAccepted):
            self._searches[experiment_id] = (reply.sequence, search)

    # --- stopping and resuming ----------------------------------------------------------------

    async def _stop_trials(self, experiment_id: str, headers: Mapping[str, str]) -> None:
        experiment = (await self.experiments.load(experiment_id)).state
        if experiment is None or experiment.status != domain.STOPPED:
            return
        for trial in experiment.running:
            await self._stop_run(trial.run_id, headers)

    async def _stop_run(self, run_id: str, headers: Mapping[str, str]) -> None:
        run, _ = await self.runs.get(run_id)
        if run is not None and run.status in (runs.QUEUED, runs.RUNNING):
            await self._call(c.StopRun(run_id=run_id), headers)

    async def _resume_trials(self, event: x.ExperimentResumed, headers: Mapping[str, str]) -> None:
        """Trials the stop paused go on from their last checkpoint."""
        experiment = (await self.experiments.load(event.experiment_id)).state
        if experiment is None or experiment.status != domain.RUNNING:
            return
        for trial in experiment.running:
            run, _ = await self.runs.get(trial.run_id)
            if run is None or run.status not in (runs.STOPPED, runs.INTERRUPTED):
                continue
            if run.epochs_done >= run.epochs:  # stopped after its last epoch: nothing to train
                message = "its run was stopped after its last epoch"
                await self._fail(experiment.experiment_id, trial.number, "STOPPED", message)
                continue
            reply = await self._call(c.ResumeRun(run_id=trial.run_id), headers)
            if isinstance(reply, CommandRejected):
                await self._fail(experiment.experiment_id, trial.number, reply.code, reply.message)

    # --- the search, stores and commands ------------------------------------------------------

    async def _search(self, experiment: domain.Experiment, position: int) -> Search:
        """The experiment's search as of ``position``, rebuilt from the log when this instance
        has not heard everything up to there."""
        cached = self._searches.get(experiment.experiment_id)
        if cached is not None and cached[0] == position:
            return cached[1]
        search = Search(experiment.spec)
        search.rebuild(await self._history(experiment))
        self._searches[experiment.experiment_id] = (position, search)
        return search

    async def _history(self, experiment: domain.Experiment) -> list[Any]:
        """The experiment's trial events and its trials' epochs, in stream order."""
        stored = list(await self.store.load(experiment.experiment_id))
        loads = [self.store.load(t.run_id) for t in experiment.trials.values()]
        for events in await asyncio.gather(*loads):
            stored += [s for s in events if isinstance(s.event, c.EpochCompleted)]
        stored.sort(key=lambda s: s.sequence)
        kinds = (x.TrialStarted, x.TrialPruned, x.TrialCompleted, x.TrialFailed, c.EpochCompleted)
        return [s.event for s in stored if isinstance(s.event, kinds)]

    async def _decide(
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
            headers={},
            refusals=(DomainError,),
            noun="experiment",
        )
        if isinstance(reply, CommandRejected):
            self._searches.pop(experiment_id, None)
            log.info("experiment %s: %s not stored: %s", experiment_id, step, reply.message)
        return reply

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


# --- the consumer -----------------------------------------------------------------------------


class Consumer:
    """Pulls the shared durable consumer and hands each event to the driver, one at a time."""

    def __init__(self, nc: NATS, driver: Driver) -> None:
        self.js, self.driver = nc.jetstream(), driver
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="experiment-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _subscribe(self) -> Any:
        try:
            await self.js.consumer_info(c.STREAM, DURABLE)
        except NotFoundError:
            config = api.ConsumerConfig(
                durable_name=DURABLE,
                filter_subject=c.EVENTS,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=MAX_ACK_PENDING,
                inactive_threshold=7 * 24 * 3600.0,
            )
            await self.js.add_consumer(c.STREAM, config)
        return await self.js.pull_subscribe_bind(durable=DURABLE, stream=c.STREAM)

    async def _run(self) -> None:
        while True:
            sub = None
            try:
                sub = await self._subscribe()
                while True:
                    try:
                        msgs = await sub.fetch(1, timeout=2.0)
                    except (NatsTimeoutError, TimeoutError):
                        continue
                    for msg in msgs:
                        await self._one(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop guard: subscribe again and go on
                log.exception("experiment driver: consumer failed; subscribing again")
                await asyncio.sleep(RETRY_DELAY_S)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def _one(self, msg: Msg) -> None:
        try:
            event = self.driver.store.decode(msg.data)
            await self.driver.handle(event, msg.headers or {})
        except msgspec.DecodeError:
            log.warning("experiment driver: undecodable event at %s", msg.metadata.sequence)
        except Exception:
            deliveries = msg.metadata.num_delivered or 1
            if deliveries < MAX_DELIVERIES:
                log.warning("experiment driver: retrying an event", exc_info=True)
                await msg.nak(delay=RETRY_DELAY_S)
                return
            log.exception("experiment driver: event given up after %d deliveries", deliveries)
        await msg.ack()

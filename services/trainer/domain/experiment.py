"""The Experiment aggregate as a pure decider: a search that starts trials (each one a run),
hears how each ended, keeps its front, and ends when its trials are done.

running ⇄ stopped → completed. A trial number is started once (a redelivered or concurrent
``TrialStarted`` for it is refused), and never beyond ``max_trials``; a trial ends once
(completed, pruned or failed). While stopped, no trial starts, but a trial whose run was
already finishing may still end. Only a completed trial can be promoted. Imports ``contracts``
and the kernel's ``domain`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from contracts import experiments as x
from services.kernel.domain import Conflict, InvalidInput, NotFound

RUNNING, STOPPED, COMPLETED = "running", "stopped", "completed"
#: A trial's states: started (its run queued or training), then one of its ends.
STARTED, PRUNED, FAILED = "started", "pruned", "failed"
TRIAL_ENDS = (COMPLETED, PRUNED, FAILED)


@dataclass(frozen=True)
class Trial:
    number: int
    run_id: str
    params: Mapping[str, Any]
    state: str = STARTED
    values: Mapping[str, float] = field(default_factory=dict)
    promoted: bool = False
    #: It was running when the experiment stopped: a stop of its run is the experiment's.
    paused: bool = False

    @property
    def running(self) -> bool:
        return self.state == STARTED


@dataclass(frozen=True)
class Experiment:
    spec: x.ExperimentCreated
    status: str = RUNNING
    trials: Mapping[int, Trial] = field(default_factory=lambda: MappingProxyType({}))
    front: x.FrontUpdated | None = None

    @property
    def experiment_id(self) -> str:
        return self.spec.experiment_id

    @property
    def running(self) -> list[Trial]:
        return [t for t in self.trials.values() if t.running]

    def trial_of(self, run_id: str) -> Trial | None:
        return next((t for t in self.trials.values() if t.run_id == run_id), None)


State = Experiment | None


class InvalidExperiment(InvalidInput):
    """The command's own values cannot make a search (``check_experiment``'s problem)."""


class ExperimentNotFound(NotFound):
    """No experiment has that id."""


class ExperimentConflict(Conflict):
    """The command does not fit the experiment's state (stopped, completed, already there)."""


class TrialConflict(Conflict):
    """The trial does not exist, was already started, or has already ended."""


def create(state: State, command: x.CreateExperiment) -> list[x.Event]:
    problem = x.check_experiment(command)
    if problem is not None:
        raise InvalidExperiment(problem[1], field=problem[0])
    if state is not None:
        raise ExperimentConflict(f"experiment {command.experiment_id} already exists")
    fields = {f: getattr(command, f) for f in x.ExperimentCreated.__struct_fields__}
    return [x.ExperimentCreated(**fields)]


def start_trial(state: State, trial: int, params: Mapping[str, Any]) -> list[x.Event]:
    experiment = _existing(state)
    if experiment.status != RUNNING:
        raise ExperimentConflict(f"experiment {experiment.experiment_id} is {experiment.status}")
    if trial in experiment.trials:
        raise TrialConflict(f"trial {trial} was already started")
    if len(experiment.trials) >= experiment.spec.max_trials:
        raise ExperimentConflict(f"all {experiment.spec.max_trials} trials were started")
    run_id = x.trial_run_id(experiment.experiment_id, trial)
    started = x.TrialStarted(
        experiment_id=experiment.experiment_id, trial=trial, run_id=run_id, params=dict(params)
    )
    return [started]


def prune(state: State, trial: int, epoch: int, value: float) -> list[x.Event]:
    experiment, running = _running_trial(state, trial)
    return [
        x.TrialPruned(
            experiment_id=experiment.experiment_id,
            trial=trial,
            run_id=running.run_id,
            epoch=epoch,
            value=value,
        )
    ]


def complete_trial(state: State, trial: int, values: Mapping[str, float]) -> list[x.Event]:
    experiment, running = _running_trial(state, trial)
    missing = [o.metric for o in experiment.spec.objectives if o.metric not in values]
    if missing:
        raise InvalidExperiment(f"trial {trial} has no value for {', '.join(missing)}")
    completed = x.TrialCompleted(
        experiment_id=experiment.experiment_id,
        trial=trial,
        run_id=running.run_id,
        values={o.metric: float(values[o.metric]) for o in experiment.spec.objectives},
    )
    return [completed]


def fail_trial(state: State, trial: int, code: str, message: str) -> list[x.Event]:
    experiment, running = _running_trial(state, trial)
    failed = x.TrialFailed(
        experiment_id=experiment.experiment_id,
        trial=trial,
        run_id=running.run_id,
        code=code,
        message=message,
    )
    return [failed]


def update_front(
    state: State, front: list[int], best: dict[str, int], importances: dict[str, float]
) -> list[x.Event]:
    """The front as the search sees it now; nothing when it has not changed."""
    experiment = _existing(state)
    updated = x.FrontUpdated(
        experiment_id=experiment.experiment_id, front=front, best=best, importances=importances
    )
    last = experiment.front
    if last is not None and (last.front, last.best, last.importances) == (
        front,
        best,
        importances,
    ):
        return []
    return [updated]


def stop(state: State, command: x.StopExperiment) -> list[x.Event]:
    experiment = _existing(state)
    if experiment.status == STOPPED:
        return []  # already stopped: a retried stop changes nothing
    if experiment.status == COMPLETED:
        raise ExperimentConflict(f"experiment {experiment.experiment_id} has completed")
    return [x.ExperimentStopped(experiment_id=experiment.experiment_id)]


def resume(state: State, command: x.ResumeExperiment) -> list[x.Event]:
    experiment = _existing(state)
    if experiment.status != STOPPED:
        raise ExperimentConflict(
            f"experiment {experiment.experiment_id} is {experiment.status}; only a stopped "
            "experiment resumes"
        )
    return [x.ExperimentResumed(experiment_id=experiment.experiment_id)]


def complete(state: State, reason: str) -> list[x.Event]:
    """The search's end: no trial runs and none may start (``reason`` says why)."""
    experiment = _existing(state)
    if experiment.status != RUNNING:
        raise ExperimentConflict(f"experiment {experiment.experiment_id} is {experiment.status}")
    if experiment.running:
        raise ExperimentConflict(f"experiment {experiment.experiment_id} has trials running")
    if reason not in x.REASONS:
        raise InvalidExperiment(f"unknown reason {reason!r}")
    trials = len(experiment.trials)
    return [
        x.ExperimentCompleted(experiment_id=experiment.experiment_id, trials=trials, reason=reason)
    ]


def promotable(state: State, command: x.PromoteTrial) -> Trial:
    """The trial ``command`` promotes: a completed one (its run has a best checkpoint)."""
    experiment = _existing(state)
    trial = experiment.trials.get(command.trial)
    if trial is None:
        raise TrialConflict(f"experiment {experiment.experiment_id} has no trial {command.trial}")
    if trial.state != COMPLETED:
        raise TrialConflict(f"trial {command.trial} is {trial.state}; only a completed trial")
    return trial


def promote(state: State, command: x.PromoteTrial) -> list[x.Event]:
    trial = promotable(state, command)
    promoted = x.TrialPromoted(
        experiment_id=command.experiment_id,
        trial=command.trial,
        run_id=trial.run_id,
        evaluation_id=command.evaluation_id,
        export_id=command.export_id,
    )
    return [promoted]


def evolve(state: State, event: x.Event) -> State:
    if isinstance(event, x.ExperimentCreated):
        return Experiment(spec=event)
    experiment = _existing(state)
    match event:
        case x.TrialStarted():
            trial = Trial(event.trial, event.run_id, MappingProxyType(dict(event.params)))
            return _with_trial(experiment, trial)
        case x.TrialCompleted():
            return _ended(experiment, event.trial, COMPLETED, event.values)
        case x.TrialPruned():
            return _ended(experiment, event.trial, PRUNED)
        case x.TrialFailed():
            return _ended(experiment, event.trial, FAILED)
        case x.TrialPromoted():
            trial = experiment.trials[event.trial]
            return _with_trial(experiment, replace(trial, promoted=True))
        case x.FrontUpdated():
            return replace(experiment, front=event)
        case x.ExperimentStopped():
            paused = {n: replace(t, paused=True) for n, t in experiment.trials.items() if t.running}
            trials = MappingProxyType({**experiment.trials, **paused})
            return replace(experiment, status=STOPPED, trials=trials)
        case x.ExperimentResumed():
            return replace(experiment, status=RUNNING)
        case x.ExperimentCompleted():
            return replace(experiment, status=COMPLETED)
    return experiment


def _with_trial(experiment: Experiment, trial: Trial) -> Experiment:
    trials = MappingProxyType({**experiment.trials, trial.number: trial})
    return replace(experiment, trials=trials)


def _ended(
    experiment: Experiment, number: int, state: str, values: Mapping[str, float] | None = None
) -> Experiment:
    trial = replace(experiment.trials[number], state=state, values=dict(values or {}))
    return _with_trial(experiment, trial)


def _existing(state: State) -> Experiment:
    if state is None:
        raise ExperimentNotFound("that experiment does not exist", field="experiment_id")
    return state


def _running_trial(state: State, number: int) -> tuple[Experiment, Trial]:
    experiment = _existing(state)
    trial = experiment.trials.get(number)
    if trial is None:
        raise TrialConflict(f"experiment {experiment.experiment_id} has no trial {number}")
    if not trial.running:
        raise TrialConflict(f"trial {number} has already ended ({trial.state})")
    return experiment, trial

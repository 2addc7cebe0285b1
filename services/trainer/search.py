"""The search of an experiment: an Optuna study that asks for trials, hears their epochs and
outcomes, prunes, and names the front, the best trial per objective and the importances.

Pure: no NATS, asyncio or torch; imports optuna and ``contracts`` only. Its state is the
experiment's events: ``rebuild`` replays them, so after a restart the study holds what it held
before and the next trial gets the next number, never a finished one's.

Determinism: every ask uses a sampler seeded by (the experiment's seed, the trial's number), and
a rebuild replays the trials in the order of their events (each re-asked with its recorded
parameters, ``report``s and ``should_prune`` included, so the samplers' and pruners' own
bookkeeping is rebuilt too). A rebuilt study therefore asks for the same parameters next as the
study that never stopped, given the same events.

Pruning (``report``) follows the FIRST objective only, and only when it is ``val_accuracy``,
``val_loss`` or a detector's ``val_map`` (mAP@[.5:.95]): the others (``params``, ``latency_ms``,
``macro_f1``) are measured once, at the end of a run, so there is nothing per epoch to prune
on. Optuna cannot prune a multi-objective study either (``check_experiment`` refuses it; here
``report`` answers False).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import ExperimentalWarning
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, NSGAIISampler, TPESampler
from optuna.trial import Trial, TrialState

from contracts import experiments as x
from contracts import training as c

# The service logs what matters itself: Optuna's INFO lines ("A new study created", every
# finished trial) would repeat it. Its experimental-feature warnings (constant liar, PED-ANOVA)
# would fire at every ask: ``_quiet`` silences them where they are raised.
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: The metrics an epoch reports (``EpochCompleted``): the only ones a trial can be pruned on.
PRUNABLE = ("val_accuracy", "val_loss", "val_map")
STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
#: Successive halving keeps the best third of the trials at each rung.
REDUCTION_FACTOR = 3


class Search:
    """The study of the experiment ``spec`` (in memory; ``rebuild`` fills it from the log)."""

    def __init__(self, spec: x.ExperimentCreated) -> None:
        self.spec = spec
        self.space = x.search_space(spec.architecture_type, spec.search_config)
        self.fixed = {k: p.value for k, p in self.space.items() if isinstance(p, x.Fixed)}
        self.distributions = {
            k: distribution(p) for k, p in self.space.items() if not isinstance(p, x.Fixed)
        }
        self.metrics = [o.metric for o in spec.objectives]
        self.study = optuna.create_study(
            directions=[o.direction for o in spec.objectives],
            sampler=self._sampler(0),
            pruner=pruner(spec),
            study_name=spec.experiment_id,
        )
        self._running: dict[int, Trial] = {}
        #: Each running trial's reported epochs → the answer its report got.
        self._reported: dict[int, dict[int, bool]] = {}
        self._runs: dict[str, int] = {}

    # --- asking and telling ---------------------------------------------------------------

    def ask(self) -> tuple[int, dict[str, Any]]:
        """The next trial's number and hyperparameters (the fixed ones included; ``epochs``
        and ``seed`` are the driver's: the budget and the experiment say them)."""
        trial = self._ask()
        return trial.number, self._params(trial)

    def report(self, trial: int, epoch: int, value: float) -> bool:
        """Records the pruning metric of ``trial`` at ``epoch``; True when the trial should be
        pruned. False for a trial that is not running (already told) and for a study that
        cannot prune (several objectives, or a first objective no epoch reports).

        Idempotent: an epoch reported again (a redelivered event, or one the rebuild already
        replayed) gets the answer it got the first time. Asking the pruner again would not do:
        successive halving records a trial's rung as it decides, and decides differently after.
        """
        running = self._running.get(trial)
        if running is None or len(self.metrics) > 1 or self.metrics[0] not in PRUNABLE:
            return False
        reported = self._reported[trial]
        if epoch not in reported:
            running.report(float(value), epoch)
            reported[epoch] = bool(running.should_prune())  # numpy's bool from the median
        return reported[epoch]

    def tell(self, trial: int, values: Mapping[str, float] | None, state: str) -> None:
        """Ends ``trial``: ``completed`` with one value per objective metric (a missing one
        fails it), ``pruned`` (its last reported value stands for it) or ``failed``. Telling a
        trial that is not running does nothing, so a redelivered outcome is harmless."""
        running = self._running.pop(trial, None)
        if running is None:
            return
        self._reported.pop(trial, None)
        if state == "completed":
            ordered = [values.get(m) for m in self.metrics] if values is not None else [None]
            if any(v is None for v in ordered):
                self.study.tell(running, state=TrialState.FAIL)
                return
            self.study.tell(running, [float(v) for v in ordered if v is not None])
            return
        self.study.tell(running, state=STATES[state])

    def rebuild(self, events: Iterable[x.TrialEvent | c.EpochCompleted]) -> None:
        """Replays the experiment's trial events, in their order, into the study. The epochs of
        the trials' runs (``EpochCompleted``, matched by run id) may be interleaved with them:
        they give the pruner the intermediate values the first study had. Trials without an
        outcome stay running, to be reported on and told later."""
        for event in events:
            if isinstance(event, x.TrialStarted):
                self._restart(event)
            elif isinstance(event, c.EpochCompleted):
                trial = self._runs.get(event.run_id)
                value = self.epoch_value(event)
                if trial is not None and value is not None:
                    self.report(trial, event.epoch, value)
            elif isinstance(event, x.TrialPruned):
                self.report(event.trial, event.epoch, event.value)
                self.tell(event.trial, None, "pruned")
            elif isinstance(event, x.TrialCompleted):
                self.tell(event.trial, event.values, "completed")
            elif isinstance(event, x.TrialFailed):
                self.tell(event.trial, None, "failed")

    # --- what the driver asks about ----------------------------------------------------------

    @property
    def running(self) -> list[int]:
        """The trials asked for and not told yet."""
        return sorted(self._running)

    def trial_of(self, run_id: str) -> int | None:
        """The trial whose run is ``run_id``, when this study started it."""
        return self._runs.get(run_id)

    def epoch_value(self, epoch: c.EpochCompleted) -> float | None:
        """What ``report`` takes from an epoch: the first objective's metric, when an epoch
        reports it (see the module's docstring; a classifier's epoch has no ``val_map``)."""
        metric = self.metrics[0]
        value = getattr(epoch, metric) if metric in PRUNABLE else None
        return None if value is None else float(value)

    def best(self) -> dict[str, int]:
        """Each objective metric → its best completed trial (the earliest of equals)."""
        done = self._completed()
        best: dict[str, int] = {}
        for i, objective in enumerate(self.spec.objectives):
            sign = -1.0 if objective.direction == "maximize" else 1.0
            ranked = sorted(
                (sign * t.values[i], t.number) for t in done if not math.isnan(t.values[i])
            )
            if ranked:
                best[objective.metric] = ranked[0][1]
        return best

    def front(self) -> list[int]:
        """The Pareto front of the completed trials by number; the best trial for one
        objective; empty before a trial completes."""
        if len(self.metrics) == 1:
            best = self.best().get(self.metrics[0])
            return [] if best is None else [best]
        return sorted(t.number for t in self.study.best_trials)

    def importances(self) -> dict[str, float]:
        """Each searched hyperparameter → its importance for the first objective (PED-ANOVA:
        numpy only, deterministic), summing to 1; {} with fewer than 2 completed trials or
        when Optuna cannot tell (one distinct value everywhere, nothing searched)."""
        if len(self._completed()) < 2 or not self.distributions:
            return {}
        sign = -1.0 if self.spec.objectives[0].direction == "maximize" else 1.0
        try:
            # The evaluator also warns that it ranks low targets first: ``sign`` sees to that.
            with _quiet(UserWarning):
                found = optuna.importance.get_param_importances(
                    self.study,
                    evaluator=PedAnovaImportanceEvaluator(),
                    target=lambda t: sign * t.values[0],
                )
        except Exception:  # too few distinct trials, a degenerate space: no importances yet
            return {}
        if not all(math.isfinite(v) for v in found.values()):
            return {}
        # A parameter with one possible value (one model in the family) was not searched.
        searched = {k for k, d in self.distributions.items() if not d.single()}
        return {name: float(v) for name, v in found.items() if name in searched}

    # --- inside ------------------------------------------------------------------------------

    def _ask(self, params: Mapping[str, Any] | None = None) -> Trial:
        number = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = self._sampler(number)
        if params is not None:
            self.study.enqueue_trial(dict(params))
        trial = self.study.ask(fixed_distributions=self.distributions)
        if params is not None and any(not d.single() for d in self.distributions.values()):
            # A first ask drew its relative sample (NSGA-II: the trial's generation and its
            # parents, cached in the study) before its first free parameter; recorded
            # parameters skip it, so draw it here, on the same study, for the same bookkeeping.
            _ = trial.relative_params
        self._running[trial.number] = trial
        self._reported[trial.number] = {}
        return trial

    def _restart(self, event: x.TrialStarted) -> None:
        """Re-asks the trial of ``event`` with its recorded parameters. A number the study has
        passed is a duplicate; a gap (a trial asked but never started) is asked and failed."""
        self._runs[event.run_id] = event.trial
        while len(self.study.get_trials(deepcopy=False)) < event.trial:
            self.tell(self._ask().number, None, "failed")
        if len(self.study.get_trials(deepcopy=False)) > event.trial:
            return
        searched = {k: v for k, v in event.params.items() if k in self.distributions}
        self._ask(searched)

    def _params(self, trial: Trial) -> dict[str, Any]:
        return {k: self.fixed[k] if k in self.fixed else trial.params[k] for k in self.space}

    def _completed(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def _sampler(self, number: int) -> BaseSampler:
        """A sampler seeded by (seed, trial number): a trial's draw depends on the study's
        trials, not on how many draws this process made before (a rebuild made none)."""
        seed, budget = trial_seed(self.spec.seed, number), self.spec.max_trials
        if len(self.spec.objectives) > 1:
            return NSGAIISampler(seed=seed, population_size=max(4, min(50, budget // 3)))
        with _quiet():
            return TPESampler(
                seed=seed,
                # The default 10 random trials would leave a 10-trial search all random.
                n_startup_trials=max(3, min(10, budget // 3)),
                # With trials in parallel, running ones count as bad so that two are not alike.
                constant_liar=self.spec.budget.max_concurrent_trials > 1,
            )


@contextlib.contextmanager
def _quiet(*also: type[Warning]) -> Iterator[None]:
    """Optuna's ExperimentalWarning (and ``also``) silenced for the block."""
    with warnings.catch_warnings():
        categories: tuple[type[Warning], ...] = (ExperimentalWarning, *also)
        for category in categories:
            warnings.simplefilter("ignore", category)
        yield


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a search seeded ``seed``."""
    digest = hashlib.sha256(f"{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def distribution(param: x.Param) -> BaseDistribution:
    """Optuna's distribution of a searched (not fixed) parameter."""
    if isinstance(param, x.Categorical):
        return CategoricalDistribution(param.choices)
    if isinstance(param, x.IntRange):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, x.FloatRange):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    raise TypeError(f"a fixed value is not searched: {param!r}")


def pruner(spec: x.ExperimentCreated) -> BasePruner:
    """The pruner ``spec.pruning`` names; none for several objectives. Both decide first at
    epoch ``warmup_epochs + 1``: the warm-up epochs are never pruned."""
    kind, first = spec.pruning.kind, spec.pruning.warmup_epochs + 1
    if kind == "none" or len(spec.objectives) > 1:
        return NopPruner()
    if kind == "successive_halving":
        return SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0
        )
    # Compare with the completed trials as soon as a few exist: the default five would never
    # prune a search of a handful of trials.
    startup = max(1, min(5, spec.max_trials // 4))
    return MedianPruner(n_startup_trials=startup, n_warmup_steps=first)

"""The experiments' search (Optuna): seeded draws, a study rebuilt from its events that goes on
as if it had never stopped, pruning fed by epochs, the front, the best trials, importances.

Each search here is driven by a made-up training: a trial's per-epoch accuracy is a function of
its parameters, so every assertion follows from the parameters the search chose.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from contracts import experiments as x
from contracts import training as c
from services.trainer.search import Search, trial_seed

EXP = "e" * 32
Score = Callable[[dict[str, Any], int], float]
Event = x.TrialEvent | c.EpochCompleted


def spec(**changes: Any) -> x.ExperimentCreated:
    base = x.ExperimentCreated(
        experiment_id=EXP, project_id="p" * 32, split_id="s" * 32, name="search",
        architecture_type="any",
        search_config={
            "model": x.Categorical(choices=["smallcnn", "resnet18"]),
            "learning_rate": x.FloatRange(low=1e-4, high=1.0, log=True),
            "batch_size": x.IntRange(low=8, high=64, step=8),
            "optimizer": x.Fixed(value="sgd"),
        },
        objectives=[x.Objective("val_accuracy", "maximize")],
        max_trials=12, budget=x.Budget(epochs_per_trial=3), pruning=x.Pruning(), seed=7,
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


TWO = [x.Objective("val_accuracy", "maximize"), x.Objective("latency_ms", "minimize")]


def accuracy(params: dict[str, Any], epoch: int) -> float:
    """Learns with a small learning rate, not with a large one (the bad region, lr >= 0.1)."""
    if params["learning_rate"] >= 0.1:
        return 0.1
    return min(0.95, 0.5 + 0.1 * epoch + params["batch_size"] / 1000)


def latency(params: dict[str, Any]) -> float:
    return 5.0 if params["model"] == "smallcnn" else 20.0 + params["batch_size"] / 8


def values(s: Search, params: dict[str, Any], epoch: int) -> dict[str, float]:
    found = {"val_accuracy": accuracy(params, epoch), "latency_ms": latency(params)}
    return {m: found[m] for m in s.metrics}


def epoch_event(run_id: str, epoch: int, acc: float) -> c.EpochCompleted:
    return c.EpochCompleted(
        run_id=run_id, epoch=epoch, train_loss=1.0, val_loss=1.0 - acc, val_accuracy=acc,
        learning_rate=0.1, seconds=1.0, images_per_second=10.0,
    )  # fmt: skip


def run_trial(s: Search, log: list[Event], *, finish: bool = True) -> tuple[int, dict[str, Any]]:
    """Asks for a trial and trains it as the driver would, logging the events it would store;
    ``finish=False`` leaves it running after its first epoch."""
    trial, params = s.ask()
    run_id = x.trial_run_id(EXP, trial)
    log.append(x.TrialStarted(experiment_id=EXP, trial=trial, run_id=run_id, params=params))
    for epoch in range(1, s.spec.budget.epochs_per_trial + 1):
        acc = accuracy(params, epoch)
        log.append(epoch_event(run_id, epoch, acc))
        if s.report(trial, epoch, acc):
            log.append(x.TrialPruned(EXP, trial, run_id, epoch=epoch, value=acc))
            s.tell(trial, None, "pruned")
            return trial, params
        if not finish:
            return trial, params
    if params["batch_size"] == 16:  # a deterministic failure now and then
        log.append(x.TrialFailed(EXP, trial, run_id, code="TRAINING_FAILED", message="boom"))
        s.tell(trial, None, "failed")
        return trial, params
    done = values(s, params, s.spec.budget.epochs_per_trial)
    log.append(x.TrialCompleted(EXP, trial, run_id, values=done))
    s.tell(trial, done, "completed")
    return trial, params


def drive(s: Search, n: int) -> list[Event]:
    log: list[Event] = []
    for _ in range(n):
        run_trial(s, log)
    return log


def outcomes(log: list[Event]) -> dict[int, str]:
    names = {x.TrialPruned: "pruned", x.TrialCompleted: "completed", x.TrialFailed: "failed"}
    return {e.trial: names[type(e)] for e in log if type(e) in names}  # type: ignore[union-attr]


def started(log: list[Event]) -> list[tuple[int, dict[str, Any]]]:
    return [(e.trial, e.params) for e in log if isinstance(e, x.TrialStarted)]


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("objectives", [spec().objectives, TWO], ids=["tpe", "nsga2"])
def test_a_seed_decides_every_draw(objectives: list[x.Objective]) -> None:
    pruning = x.Pruning(kind="none") if len(objectives) > 1 else x.Pruning()
    first = drive(Search(spec(objectives=objectives, pruning=pruning)), 12)
    again = drive(Search(spec(objectives=objectives, pruning=pruning)), 12)
    other = drive(Search(spec(objectives=objectives, pruning=pruning, seed=8)), 12)
    assert started(first) == started(again)
    assert outcomes(first) == outcomes(again)
    assert started(first) != started(other)


def test_a_trial_gets_the_whole_space_fixed_values_included() -> None:
    trial, params = Search(spec()).ask()
    assert trial == 0
    assert list(params) == ["model", "learning_rate", "batch_size", "optimizer"]
    assert params["model"] in ("smallcnn", "resnet18") and params["optimizer"] == "sgd"
    assert 1e-4 <= params["learning_rate"] <= 1.0 and params["batch_size"] % 8 == 0


def test_an_empty_space_searches_the_family_and_a_log_learning_rate() -> None:
    s = Search(spec(architecture_type="resnet", search_config={}))
    draws = [s.ask()[1] for _ in range(12)]
    assert {d["model"] for d in draws} <= {"resnet18", "resnet34", "resnet50"}
    assert all(1e-4 <= d["learning_rate"] <= 1e-1 for d in draws)


def test_trial_seeds_differ_by_trial_and_by_seed() -> None:
    seeds = {trial_seed(s, n) for s in range(5) for n in range(50)}
    assert len(seeds) == 250 and all(0 <= v < 2**32 for v in seeds)


# --- rebuild -------------------------------------------------------------------------------


@pytest.mark.parametrize("objectives", [spec().objectives, TWO], ids=["tpe", "nsga2"])
def test_a_rebuilt_search_goes_on_as_if_it_never_stopped(objectives: list[x.Objective]) -> None:
    # Given a search with finished trials (completed, pruned, failed) and one still running
    pruning = x.Pruning(kind="none") if len(objectives) > 1 else x.Pruning()
    kept = spec(objectives=objectives, pruning=pruning)
    first = Search(kept)
    log = drive(first, 9)
    running, _ = run_trial(first, log, finish=False)
    # When a new process rebuilds it from the events
    rebuilt = Search(kept)
    rebuilt.rebuild(log)
    # Then the running trial is still running, the front and best are the same
    assert rebuilt.running == first.running == [running]
    assert rebuilt.front() == first.front() and rebuilt.best() == first.best()
    # and both go on alike: the same next numbers and parameters, never a known number
    for _ in range(4):
        assert rebuilt.ask() == first.ask()
    numbers = [n for n, _ in started(log)]
    assert sorted(numbers) == list(range(10))
    assert rebuilt.ask()[0] == 14


def test_a_rebuilt_pruner_prunes_as_the_first_one_would() -> None:
    # Given a successive-halving search whose rungs were filled before the restart
    kept = spec(pruning=x.Pruning(kind="successive_halving", warmup_epochs=0))
    first = Search(kept)
    log = drive(first, 8)
    rebuilt = Search(kept)
    rebuilt.rebuild(log)
    # Then the trials after it are pruned (or not) exactly as in the uninterrupted search
    after, uninterrupted = drive(rebuilt, 6), drive(first, 6)
    assert started(after) == started(uninterrupted)
    assert outcomes(after) == outcomes(uninterrupted)
    assert "pruned" in outcomes(log).values() and "pruned" in outcomes(after).values()


@pytest.mark.parametrize("kind", ["median", "successive_halving"])
def test_an_epoch_reported_again_gets_its_first_answer(kind: str) -> None:
    # Given a search that pruned a trial at some epoch
    kept = spec(pruning=x.Pruning(kind=kind, warmup_epochs=0))
    log = drive(Search(kept), 10)
    pruned = next(e for e in log if isinstance(e, x.TrialPruned))
    # When a new process rebuilds it from the log up to that epoch (the driver rebuilds from
    # what is stored, the epoch it is about to hear included), then hears that epoch
    upto = log.index(pruned)
    rebuilt = Search(kept)
    rebuilt.rebuild(log[:upto])
    # Then the trial is pruned, as it was, and asking again answers the same
    assert rebuilt.report(pruned.trial, pruned.epoch, pruned.value) is True
    assert rebuilt.report(pruned.trial, pruned.epoch, pruned.value) is True


def test_a_rebuild_skips_duplicates_and_fills_gaps() -> None:
    first = Search(spec())
    log = drive(first, 3)
    gap = x.TrialStarted(EXP, trial=5, run_id=x.trial_run_id(EXP, 5), params=first.ask()[1])
    rebuilt = Search(spec())
    # A redelivered start and outcome, and a trial started after two that never were
    rebuilt.rebuild([*log, log[0], log[-1], gap])
    assert rebuilt.running == [5]
    assert rebuilt.ask()[0] == 6
    rebuilt.tell(5, {"val_accuracy": 0.5}, "completed")
    assert rebuilt.trial_of(x.trial_run_id(EXP, 5)) == 5


def test_telling_twice_or_reporting_late_changes_nothing() -> None:
    s = Search(spec(pruning=x.Pruning(kind="none")))
    trial, _ = s.ask()
    s.tell(trial, {"val_accuracy": 0.8}, "completed")
    s.tell(trial, None, "failed")
    assert s.report(trial, 1, 0.0) is False
    assert s.best() == {"val_accuracy": trial} and s.running == []


def test_a_completed_trial_without_every_objective_fails() -> None:
    s = Search(spec(objectives=TWO, pruning=x.Pruning(kind="none")))
    trial, _ = s.ask()
    s.tell(trial, {"val_accuracy": 0.9}, "completed")
    assert s.front() == [] and s.best() == {}


# --- pruning -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["median", "successive_halving"])
def test_a_bad_region_is_pruned_from_its_epochs(kind: str) -> None:
    # Every trial of the good region learns alike; the bad region (lr >= 0.1) does not learn.
    space = {
        "learning_rate": x.FloatRange(low=1e-3, high=1.0, log=True),
        "batch_size": x.Fixed(value=32),
    }
    s = Search(spec(search_config=space, pruning=x.Pruning(kind=kind, warmup_epochs=1)))
    log = drive(s, 12)
    params = dict(started(log))
    ends = outcomes(log)
    pruned = [t for t, state in ends.items() if state == "pruned"]
    bad = [t for t, p in params.items() if p["learning_rate"] >= 0.1]
    assert pruned and set(pruned) <= set(bad)
    # never in the warm-up epoch: the first decision is at epoch 2
    assert all(e.epoch >= 2 for e in log if isinstance(e, x.TrialPruned))


def test_without_pruning_nothing_is_pruned() -> None:
    log = drive(Search(spec(pruning=x.Pruning(kind="none"))), 12)
    assert "pruned" not in outcomes(log).values()


def test_only_an_epoch_metric_of_a_single_objective_can_prune() -> None:
    several = Search(spec(objectives=TWO, pruning=x.Pruning(kind="none")))
    latency_only = Search(spec(objectives=[x.Objective("latency_ms", "minimize")]))
    for s in (several, latency_only):
        trial, _ = s.ask()
        assert s.report(trial, 5, 0.0) is False
        assert s.epoch_value(epoch_event("r", 1, 0.5)) == (0.5 if s is several else None)
    loss = Search(spec(objectives=[x.Objective("val_loss", "minimize")]))
    assert loss.epoch_value(epoch_event("r", 1, 0.75)) == pytest.approx(0.25)


# --- front, best, importances --------------------------------------------------------------


def dominates(a: list[float], b: list[float]) -> bool:
    """``a`` (accuracy up, latency down) is at least as good everywhere and better somewhere."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def test_the_front_of_two_objectives_is_the_non_dominated_set() -> None:
    s = Search(spec(objectives=TWO, pruning=x.Pruning(kind="none")))
    log = drive(s, 12)
    done = {
        e.trial: [e.values["val_accuracy"], e.values["latency_ms"]]
        for e in log
        if isinstance(e, x.TrialCompleted)
    }
    expected = sorted(t for t, v in done.items() if not any(dominates(w, v) for w in done.values()))
    assert expected and s.front() == expected
    best_acc = max(done, key=lambda t: (done[t][0], -t))
    best_lat = min(done, key=lambda t: (done[t][1], t))
    assert s.best() == {"val_accuracy": best_acc, "latency_ms": best_lat}


def test_one_objective_has_its_best_trial_as_front() -> None:
    s = Search(spec(pruning=x.Pruning(kind="none")))
    assert s.front() == [] and s.best() == {}
    for value in (0.5, 0.9, 0.9, 0.7):
        trial, _ = s.ask()
        s.tell(trial, {"val_accuracy": value}, "completed")
    assert s.front() == [1] and s.best() == {"val_accuracy": 1}


def test_importances_need_two_completed_trials() -> None:
    s = Search(spec(pruning=x.Pruning(kind="none")))
    assert s.importances() == {}
    trial, _ = s.ask()
    s.tell(trial, {"val_accuracy": 0.5}, "completed")
    assert s.importances() == {}


def test_importances_rank_the_parameter_that_decides() -> None:
    # The accuracy depends on the learning rate alone, never on the model
    space = {
        "model": x.Categorical(choices=["smallcnn", "resnet18"]),
        "learning_rate": x.FloatRange(low=1e-3, high=1.0, log=True),
        "batch_size": x.Fixed(value=32),
    }
    s = Search(spec(search_config=space, pruning=x.Pruning(kind="none"), max_trials=30))
    drive(s, 30)
    found = s.importances()
    assert set(found) == {"model", "learning_rate"}
    assert found["learning_rate"] > found["model"]
    assert all(math.isfinite(v) and v >= 0 for v in found.values())


def test_optuna_stays_quiet() -> None:
    # Parallel trials (constant liar) and PED-ANOVA are experimental in Optuna: each ask and
    # each front would warn, into the service's logs.
    s = Search(spec(pruning=x.Pruning(kind="none"), budget=x.Budget(max_concurrent_trials=2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drive(s, 4)
        s.importances()
    assert [str(w.message) for w in caught] == []

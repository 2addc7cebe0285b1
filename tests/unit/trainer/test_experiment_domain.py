"""The Experiment decider, given its events, when a step of the search, then events or a refusal;
and the experiments' contract checks (``check_experiment``, the model families).

Pure: the search's numbers and values are given as the driver would pass them.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from contracts import experiments as x
from contracts import training as c
from services.trainer.domain.experiment import (
    COMPLETED,
    PRUNED,
    RUNNING,
    STOPPED,
    ExperimentConflict,
    ExperimentNotFound,
    InvalidExperiment,
    State,
    TrialConflict,
    complete,
    complete_trial,
    create,
    evolve,
    fail_trial,
    promote,
    prune,
    resume,
    start_trial,
    stop,
    update_front,
)
from services.vision.models import HEADS
from tests.scenario import Decider

EXPERIMENT: Decider[State, Any, x.Event] = Decider(evolve=evolve, initial=None)
given = EXPERIMENT.given

E = "e" * 32
CREATE = x.CreateExperiment(
    experiment_id=E, project_id="p" * 32, split_id="s" * 32, name="cats", max_trials=2,
    architecture_type="smallcnn",
)  # fmt: skip
CREATED = create(None, CREATE)[0]
PARAMS = {"model": "smallcnn", "learning_rate": 0.01}


def started(trial: int) -> x.TrialStarted:
    run_id = x.trial_run_id(E, trial)
    return x.TrialStarted(experiment_id=E, trial=trial, run_id=run_id, params=PARAMS)


def completed(trial: int, accuracy: float) -> x.TrialCompleted:
    run_id = x.trial_run_id(E, trial)
    values = {"val_accuracy": accuracy}
    return x.TrialCompleted(experiment_id=E, trial=trial, run_id=run_id, values=values)


# --- create ----------------------------------------------------------------------------------


def test_a_valid_command_creates_the_experiment_with_its_spec() -> None:
    created = given().when(lambda s: create(s, CREATE)).after()
    assert created is not None and created.status == RUNNING
    assert created.spec.max_trials == 2 and created.spec.objectives == x.default_objectives()


def test_a_bad_command_is_refused_naming_the_field() -> None:
    bad = msgspec.structs.replace(CREATE, max_trials=501)
    given().when(lambda s: create(s, bad)).then_refused(InvalidExperiment, field="max_trials")


def test_an_experiment_is_created_once() -> None:
    given(CREATED).when(lambda s: create(s, CREATE)).then_refused(ExperimentConflict)


# --- trials ----------------------------------------------------------------------------------


def test_a_trial_starts_with_its_derived_run_id() -> None:
    given(CREATED).when(lambda s: start_trial(s, 0, PARAMS)).then(started(0))


def test_a_trial_number_starts_once() -> None:
    given(CREATED, started(0)).when(lambda s: start_trial(s, 0, PARAMS)).then_refused(TrialConflict)


def test_no_trial_starts_beyond_max_trials() -> None:
    history = (CREATED, started(0), started(1))
    given(*history).when(lambda s: start_trial(s, 2, PARAMS)).then_refused(ExperimentConflict)


def test_no_trial_starts_while_stopped() -> None:
    history = (CREATED, x.ExperimentStopped(experiment_id=E))
    given(*history).when(lambda s: start_trial(s, 0, PARAMS)).then_refused(ExperimentConflict)


def test_a_trial_completes_with_one_value_per_objective() -> None:
    values = {"val_accuracy": 0.75, "val_loss": 0.5}  # val_loss is no objective: left out
    given(CREATED, started(0)).when(lambda s: complete_trial(s, 0, values)).then(completed(0, 0.75))


def test_a_trial_without_its_objective_value_does_not_complete() -> None:
    given(CREATED, started(0)).when(lambda s: complete_trial(s, 0, {"val_loss": 1.0})).then_refused(
        InvalidExperiment
    )


def test_a_trial_ends_once() -> None:
    history = (CREATED, started(0), completed(0, 0.5))
    given(*history).when(lambda s: fail_trial(s, 0, "X", "late")).then_refused(TrialConflict)
    given(*history).when(lambda s: prune(s, 0, 1, 0.1)).then_refused(TrialConflict)


def test_a_pruned_trial_records_its_epoch_and_value() -> None:
    run_id = x.trial_run_id(E, 0)
    pruned = x.TrialPruned(experiment_id=E, trial=0, run_id=run_id, epoch=2, value=0.1)
    after = given(CREATED, started(0)).when(lambda s: prune(s, 0, 2, 0.1)).after()
    assert after is not None and after.trials[0].state == PRUNED and not after.running
    given(CREATED, started(0)).when(lambda s: prune(s, 0, 2, 0.1)).then(pruned)


def test_an_unknown_trial_cannot_end() -> None:
    given(CREATED).when(lambda s: fail_trial(s, 7, "X", "?")).then_refused(TrialConflict)


def test_a_still_running_trial_may_end_while_the_experiment_is_stopped() -> None:
    history = (CREATED, started(0), x.ExperimentStopped(experiment_id=E))
    given(*history).when(lambda s: complete_trial(s, 0, {"val_accuracy": 0.5})).then(
        completed(0, 0.5)
    )


# --- front -----------------------------------------------------------------------------------


def test_the_front_is_stored_when_it_changes_only() -> None:
    front = x.FrontUpdated(experiment_id=E, front=[0], best={"val_accuracy": 0}, importances={})
    history = (CREATED, started(0), completed(0, 0.5))
    given(*history).when(lambda s: update_front(s, [0], {"val_accuracy": 0}, {})).then(front)
    given(*history, front).when(lambda s: update_front(s, [0], {"val_accuracy": 0}, {})).then()


# --- stop, resume, complete ------------------------------------------------------------------


def test_stop_then_resume() -> None:
    stopped = x.ExperimentStopped(experiment_id=E)
    given(CREATED).when(lambda s: stop(s, x.StopExperiment(experiment_id=E))).then(stopped)
    given(CREATED, stopped).when(lambda s: stop(s, x.StopExperiment(experiment_id=E))).then()
    after = (
        given(CREATED, stopped)
        .when(lambda s: resume(s, x.ResumeExperiment(experiment_id=E)))
        .after()
    )
    assert after is not None and after.status == RUNNING


def test_a_stop_pauses_the_running_trials_only() -> None:
    history = (CREATED, started(0), completed(0, 0.5), started(1))
    after = given(*history).when(lambda s: stop(s, x.StopExperiment(experiment_id=E))).after()
    assert after is not None and after.status == STOPPED
    assert [t.paused for t in after.trials.values()] == [False, True]


def test_a_running_experiment_does_not_resume() -> None:
    given(CREATED).when(lambda s: resume(s, x.ResumeExperiment(experiment_id=E))).then_refused(
        ExperimentConflict
    )


def test_the_experiment_completes_when_no_trial_runs() -> None:
    history = (CREATED, started(0), completed(0, 0.5), started(1), completed(1, 0.6))
    done = x.ExperimentCompleted(experiment_id=E, trials=2, reason="max_trials")
    given(*history).when(lambda s: complete(s, "max_trials")).then(done)
    after = given(*history).when(lambda s: complete(s, "max_trials")).after()
    assert after is not None and after.status == COMPLETED


def test_the_experiment_does_not_complete_while_a_trial_runs() -> None:
    given(CREATED, started(0)).when(lambda s: complete(s, "max_trials")).then_refused(
        ExperimentConflict
    )


def test_a_completed_experiment_does_not_stop() -> None:
    history = (CREATED, x.ExperimentCompleted(experiment_id=E, trials=0, reason="wall_time"))
    given(*history).when(lambda s: stop(s, x.StopExperiment(experiment_id=E))).then_refused(
        ExperimentConflict
    )


def test_nothing_happens_to_an_experiment_that_does_not_exist() -> None:
    given().when(lambda s: start_trial(s, 0, PARAMS)).then_refused(
        ExperimentNotFound, field="experiment_id"
    )


# --- promote ---------------------------------------------------------------------------------


def test_a_completed_trial_is_promoted_a_running_one_is_not() -> None:
    command = x.PromoteTrial(experiment_id=E, trial=0, evaluation_id="v" * 32, export_id="x" * 32)
    promoted = x.TrialPromoted(
        experiment_id=E, trial=0, run_id=x.trial_run_id(E, 0), evaluation_id="v" * 32,
        export_id="x" * 32,
    )  # fmt: skip
    given(CREATED, started(0), completed(0, 0.5)).when(lambda s: promote(s, command)).then(promoted)
    given(CREATED, started(0)).when(lambda s: promote(s, command)).then_refused(TrialConflict)


# --- the contract's checks -------------------------------------------------------------------


def test_every_model_of_the_registry_is_in_exactly_one_family_and_in_any() -> None:
    families = {k: v for k, v in x.MODEL_FAMILIES.items() if k not in ("any", x.DETECTION_FAMILY)}
    assert set(families) == set(x.FAMILIES)
    assert sorted(x.MODEL_FAMILIES[x.DETECTION_FAMILY]) == sorted(c.DETECTORS)
    listed = [m for models in families.values() for m in models]
    assert sorted(listed) == sorted(HEADS) == sorted(c.MODELS)
    assert sorted(x.MODEL_FAMILIES["any"]) == sorted(HEADS)
    assert all(m.startswith(f) for f, models in families.items() for m in models)


def test_searchable_names_are_hyperparameters_and_exclude_epochs() -> None:
    fields = {f.name: f.type for f in msgspec.structs.fields(c.Hyperparameters)}
    assert set(x.SEARCHABLE) <= set(fields) and "epochs" not in x.SEARCHABLE
    assert all(fields[k] is v or fields[k] == v.__name__ for k, v in x.SEARCHABLE.items())


def test_trial_run_ids_are_derived_and_distinct() -> None:
    assert x.trial_run_id(E, 3) == x.trial_run_id(E, 3) != x.trial_run_id(E, 4)
    assert x.trial_run_id(E, 3) != x.trial_run_id("f" * 32, 3)


def _with(**changes: Any) -> x.CreateExperiment:
    return msgspec.structs.replace(CREATE, **changes)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (_with(name=" "), "name"),
        (_with(architecture_type="vit"), "architecture_type"),
        (_with(max_trials=0), "max_trials"),
        (_with(search_config={"epochs": x.IntRange(low=1, high=3)}), "search_config.epochs"),
        (_with(search_config={"depth": x.Fixed(value=3)}), "search_config.depth"),
        (_with(search_config={"model": x.Categorical(choices=[])}), "search_config.model.choices"),
        (
            _with(search_config={"model": x.Categorical(choices=["resnet18"])}),
            "search_config.model.choices.0",
        ),
        (
            _with(search_config={"model": x.Categorical(choices=["vgg"])}),
            "search_config.model.choices.0",
        ),
        (
            _with(search_config={"learning_rate": x.FloatRange(low=0.1, high=0.01)}),
            "search_config.learning_rate.low",
        ),
        (
            _with(search_config={"learning_rate": x.FloatRange(low=0.0, high=0.1, log=True)}),
            "search_config.learning_rate.low",
        ),
        (
            _with(search_config={"batch_size": x.FloatRange(low=1, high=8)}),
            "search_config.batch_size.type",
        ),
        (
            _with(search_config={"optimizer": x.Categorical(choices=["adam"])}),
            "search_config.optimizer.choices.0",
        ),
        (_with(objectives=[x.Objective("accuracy", "maximize")]), "objectives.0.metric"),
        (_with(objectives=[x.Objective("params", "smallest")]), "objectives.0.direction"),
        (
            _with(
                objectives=[x.Objective("params", "minimize"), x.Objective("params", "maximize")],
                pruning=x.Pruning(kind="none"),
            ),
            "objectives.1.metric",
        ),
        (_with(objectives=[]), "objectives"),
        (_with(budget=x.Budget(max_concurrent_trials=17)), "budget.max_concurrent_trials"),
        (_with(budget=x.Budget(epochs_per_trial=0)), "budget.epochs_per_trial"),
        (_with(budget=x.Budget(wall_time_s=0.5)), "budget.wall_time_s"),
        (_with(pruning=x.Pruning(kind="hyperband")), "pruning.kind"),
        (
            _with(
                objectives=[
                    x.Objective("val_accuracy", "maximize"),
                    x.Objective("params", "minimize"),
                ]
            ),
            "pruning.kind",
        ),
    ],
)
def test_check_experiment_names_the_first_bad_field(
    command: x.CreateExperiment, field: str
) -> None:
    problem = x.check_experiment(command)
    assert problem is not None and problem[0] == field, problem


def test_the_original_minimal_request_and_two_objectives_without_pruning_are_valid() -> None:
    assert x.check_experiment(CREATE) is None
    two = [x.Objective("val_accuracy", "maximize"), x.Objective("latency_ms", "minimize")]
    assert x.check_experiment(_with(objectives=two, pruning=x.Pruning(kind="none"))) is None


def test_the_default_space_is_the_family_and_a_log_learning_rate() -> None:
    space = x.search_space("mobilenet", {})
    assert space["model"] == x.Categorical(choices=["mobilenet_v3_small", "mobilenet_v3_large"])
    assert space["learning_rate"] == x.FloatRange(low=1e-4, high=1e-1, log=True)
    given_space = {"optimizer": x.Categorical(choices=["sgd", "adamw"])}
    assert set(x.search_space("any", given_space)) == {"model", "optimizer"}

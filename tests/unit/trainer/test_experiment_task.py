"""A search fits its project's task: a detection project's "any" is the detectors' family, its
default objective is validation mAP@[.5:.95] maximised; a family, a model or an objective of
the other task is refused with its field (``check_task``, which the gateway answers as a 422
VALIDATION_ERROR like a run's model of the other task). A detection search asks for detectors
only, prunes on the epochs' ``val_map`` and ranks its trials by it; a classifier's epoch, which
has no mAP, feeds no pruning."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from contracts import experiments as x
from contracts import training as c
from services.trainer.search import Search

EXP = "e" * 32
DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def command(**changes: Any) -> x.CreateExperiment:
    base = x.CreateExperiment(
        experiment_id=EXP, project_id="p" * 32, split_id="s" * 32, name="search",
        architecture_type=x.DETECTION_FAMILY, objectives=x.default_objectives("detection"),
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


def created(cmd: x.CreateExperiment) -> x.ExperimentCreated:
    fields = {f: getattr(cmd, f) for f in x.ExperimentCreated.__struct_fields__}
    return x.ExperimentCreated(**fields)


def epoch(run_id: str, n: int, val_map: float | None) -> c.EpochCompleted:
    return c.EpochCompleted(
        run_id=run_id, epoch=n, train_loss=1.0, val_loss=1.0, val_accuracy=0.0,
        learning_rate=0.01, seconds=1.0, images_per_second=10.0, val_map=val_map,
    )  # fmt: skip


def test_any_means_the_detectors_on_a_detection_project_and_map_is_its_objective():
    assert x.family_for_task("any", "detection") == x.DETECTION_FAMILY
    assert x.family_for_task("any", "classification") == "any"
    assert x.family_for_task("resnet", "detection") == "resnet"  # judged by check_task
    assert x.default_objectives("detection") == [x.Objective("val_map", "maximize")]
    assert x.default_objectives() == [x.Objective("val_accuracy", "maximize")]
    assert x.check_task(command(), "detection") is None and x.check_experiment(command()) is None


@pytest.mark.parametrize(
    ("task", "changes", "field", "says"),
    [
        ("detection", {"architecture_type": "resnet"}, "architecture_type", "detector, any"),
        ("classification", {}, "architecture_type", "a classifier's family"),
        (
            "detection",
            {"search_config": {"model": x.Categorical(choices=[DETECTOR, "resnet18"])}},
            "search_config.model.choices.1",
            "a detection project trains a detector, not 'resnet18'",
        ),
        (
            "classification",
            {"architecture_type": "any", "search_config": {"model": x.Fixed(value=DETECTOR)}},
            "search_config.model.value",
            f"a classification project trains a classifier, not '{DETECTOR}'",
        ),
        (
            "detection",
            {
                "objectives": [
                    x.Objective("val_map", "maximize"),
                    x.Objective("macro_f1", "maximize"),
                ]
            },
            "objectives.1.metric",
            "do not measure macro_f1: one of val_map, val_loss, latency_ms, params",
        ),
        (
            "detection",
            {"objectives": [x.Objective("val_accuracy", "maximize")]},
            "objectives.0.metric",
            "do not measure val_accuracy",
        ),
        (
            "classification",
            {"architecture_type": "any", "objectives": [x.Objective("val_map", "maximize")]},
            "objectives.0.metric",
            "a classification project's runs do not measure val_map",
        ),
    ],
)
def test_what_does_not_fit_the_task_is_refused_with_its_field(task, changes, field, says):
    problem = x.check_task(command(**changes), task)
    assert problem is not None and problem[0] == field and says in problem[1], problem


def test_a_classification_search_still_fits_and_unknown_names_are_left_to_the_check():
    classify = command(architecture_type="any", objectives=x.default_objectives())
    assert x.check_task(classify, "classification") is None
    odd = command(search_config={"model": x.Categorical(choices=["no_such_model"])})
    assert x.check_task(odd, "detection") is None
    assert x.check_experiment(odd) == (
        "search_config.model.choices.0",
        "unknown model 'no_such_model'",
    )


def test_a_detection_search_asks_for_detectors_and_ranks_its_trials_by_map():
    search = Search(created(command(max_trials=6, seed=3)))
    asked = [search.ask() for _ in range(3)]
    assert all(params["model"] in c.DETECTORS for _, params in asked)
    for (trial, _), value in zip(asked, (0.2, 0.6, 0.4), strict=True):
        search.tell(trial, {"val_map": value}, "completed")
    assert search.best() == {"val_map": asked[1][0]} and search.front() == [asked[1][0]]


def test_a_detection_search_prunes_on_the_epochs_map():
    spec = created(command(max_trials=8, pruning=x.Pruning(kind="median", warmup_epochs=0)))
    search = Search(spec)
    assert search.epoch_value(epoch("r", 1, 0.3)) == 0.3
    assert search.epoch_value(epoch("r", 1, None)) is None  # a classifier's epoch has no mAP
    for value in (0.5, 0.6, 0.55):  # completed trials that learned
        trial, _ = search.ask()
        search.report(trial, 1, value)
        search.tell(trial, {"val_map": value}, "completed")
    worse, _ = search.ask()
    assert search.report(worse, 1, 0.01) is True

"""The Experiment aggregate of the training context: a search over models and hyperparameters.

An experiment asks a search (Optuna) for trials; each trial is an ordinary run whose
``experiment_id`` is the experiment's id and whose run id derives from the experiment and the
trial number (``trial_run_id``), so a re-sent ``StartRun`` is deduplicated. Its events live on
the TRAINING stream, one subject per experiment (``experiment_subject``).

Imports ``contracts.common`` and ``contracts.envelope`` at module level only: ``contracts.training``
imports this module for its ``Event`` union, so ``check_experiment`` reads the hyperparameters'
bounds from it lazily.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import msgspec

from contracts.common import Id, Keyword
from contracts.envelope import Message

CONTEXT: Final = "training"
#: The model families an experiment may search (``architecture_type``), and "any".
FAMILIES: Final = ("resnet", "mobilenet", "efficientnet", "convnext", "smallcnn")
#: The detectors' family: what a detection project searches (its "any" means this family);
#: the classifier families and their "any" are a classification project's.
DETECTION_FAMILY: Final = "detector"
ARCHITECTURE_TYPES: Final = (*FAMILIES, "any", DETECTION_FAMILY)
#: Every model of the trainer's zoo by family; "any" holds them all, the small ones first (the
#: default space tries the cheap models before the expensive ones). A unit test checks this
#: against the trainer's model registry.
MODEL_FAMILIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "smallcnn": ("smallcnn",),
        "mobilenet": ("mobilenet_v3_small", "mobilenet_v3_large"),
        "resnet": ("resnet18", "resnet34", "resnet50"),
        "efficientnet": ("efficientnet_b0",),
        "convnext": ("convnext_tiny",),
        "any": (
            "smallcnn",
            "mobilenet_v3_small",
            "resnet18",
            "efficientnet_b0",
            "mobilenet_v3_large",
            "resnet34",
            "resnet50",
            "convnext_tiny",
        ),
        # The smallest first, as for "any"; the same names as ``contracts.training.DETECTORS``.
        DETECTION_FAMILY: (
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            "ssdlite320_mobilenet_v3_large",
            "fcos_resnet50_fpn",
            "retinanet_resnet50_fpn_v2",
            "fasterrcnn_resnet50_fpn_v2",
        ),
    }
)
#: The ``Hyperparameters`` fields a search may vary, and the Python type of each. ``epochs``
#: comes from the budget; ``seed`` derives from the experiment's seed; ``workers``,
#: ``mixed_precision`` and ``pretrained`` are about the machine, not the model.
SEARCHABLE: Final[Mapping[str, type]] = MappingProxyType(
    {
        "model": str,
        "batch_size": int,
        "learning_rate": float,
        "optimizer": str,
        "schedule": str,
        "weight_decay": float,
        "image_size": int,
        "augmentation": str,
        "class_weights": str,
        "early_stopping_patience": int,
    }
)
#: ``val_map`` is a detector's validation mAP@[.5:.95] (COCO's primary figure, the one its run
#: picks its best epoch by; mAP@.5 alone would rank loose boxes as high as tight ones).
METRICS: Final = ("val_accuracy", "val_loss", "latency_ms", "params", "macro_f1", "val_map")
#: The metrics each task's runs measure: a detector's accuracy is 0 and it has no macro F1; a
#: classifier has no mAP.
TASK_METRICS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "classification": ("val_accuracy", "val_loss", "latency_ms", "params", "macro_f1"),
        "detection": ("val_map", "val_loss", "latency_ms", "params"),
    }
)
DIRECTIONS: Final = ("maximize", "minimize")
PRUNERS: Final = ("none", "median", "successive_halving")
MAX_TRIALS: Final = 500
MAX_CONCURRENT_TRIALS: Final = 16
MAX_EPOCHS_PER_TRIAL: Final = 1000
MIN_WALL_TIME_S: Final = 1.0
NAME_MAX: Final = 200
#: Choices of one categorical parameter; objectives of one experiment.
MAX_CHOICES: Final = 64
MAX_OBJECTIVES: Final = len(METRICS)
#: Optuna's samplers take a 32-bit seed.
SEED_MAX: Final = 2**32 - 1
#: Why an experiment ended (``ExperimentCompleted.reason``).
REASONS: Final = ("max_trials", "wall_time", "stopped_all")

#: The namespace of the trials' derived run ids (a constant: changing it would re-run trials).
TRIAL_NAMESPACE: Final = uuid.UUID("6f0c1b4e-2d8a-5b7e-9c3f-a1e4d5b60715")


def trial_run_id(experiment_id: str, trial: int) -> str:
    """The run id of trial ``trial``: the same every time, so a re-sent StartRun is a duplicate."""
    return uuid.uuid5(TRIAL_NAMESPACE, f"{experiment_id}/{trial}").hex


def experiment_subject(experiment_id: str) -> str:
    return f"evt.training.{experiment_id}"


class ExperimentSubjects:
    CREATE_EXPERIMENT: Final = "cmd.training.create_experiment"
    STOP_EXPERIMENT: Final = "cmd.training.stop_experiment"
    RESUME_EXPERIMENT: Final = "cmd.training.resume_experiment"
    PROMOTE_TRIAL: Final = "cmd.training.promote_trial"


# --- the search space -----------------------------------------------------------------------

Scalar = str | int | float | bool


class Categorical(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="categorical"):
    choices: list[Scalar]


class IntRange(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="int"):
    low: int
    high: int
    step: int = 1
    log: bool = False


class FloatRange(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="float"):
    low: float
    high: float
    step: float | None = None
    log: bool = False


class Fixed(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="fixed"):
    value: Scalar


Param = Categorical | IntRange | FloatRange | Fixed


class Objective(msgspec.Struct, frozen=True):
    metric: str
    direction: str


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    epochs_per_trial: int = 3
    max_concurrent_trials: int = 1
    #: Seconds from the experiment's creation after which no new trial starts; None: no limit.
    wall_time_s: float | None = None


class Pruning(msgspec.Struct, frozen=True, kw_only=True):
    """Pruning fed by the trials' epochs. Only with one objective (Optuna cannot prune a
    multi-objective study); only ``val_accuracy`` or ``val_loss`` can prune, as only they are
    reported per epoch."""

    kind: str = "median"
    #: Epochs a trial runs before it may be pruned.
    warmup_epochs: int = 1


def default_objectives(task_type: str = "classification") -> list[Objective]:
    """A search's objective when none is given: the accuracy of a classifier, the mAP of a
    detector, maximised."""
    if task_type == "detection":
        return [Objective("val_map", "maximize")]
    return [Objective("val_accuracy", "maximize")]


def family_for_task(architecture_type: str, task_type: str) -> str:
    """``architecture_type`` as a project of ``task_type`` means it: "any" of a detection
    project is the detectors' family; anything else is kept (``check_task`` judges it)."""
    if task_type == "detection" and architecture_type == "any":
        return DETECTION_FAMILY
    return architecture_type


def search_space(architecture_type: str, search_config: Mapping[str, Param]) -> dict[str, Param]:
    """The space a search samples: ``search_config`` as given, ``model`` over the family when
    the config does not name it, and a log learning-rate range when the config is empty."""
    space: dict[str, Param] = {}
    if "model" not in search_config:
        space["model"] = Categorical(choices=list(MODEL_FAMILIES.get(architecture_type, ())))
    if not search_config:
        space["learning_rate"] = FloatRange(low=1e-4, high=1e-1, log=True)
    space.update(search_config)
    return space


# --- commands -------------------------------------------------------------------------------


class CreateExperiment(Message, frozen=True, tag="training.create_experiment.v1"):
    experiment_id: Id
    project_id: Id
    split_id: Id
    name: str
    architecture_type: Keyword = "any"
    search_config: dict[str, Param] = {}
    max_trials: int = 10
    objectives: list[Objective] = msgspec.field(default_factory=default_objectives)
    budget: Budget = msgspec.field(default_factory=Budget)
    pruning: Pruning = msgspec.field(default_factory=Pruning)
    seed: int = 0


class StopExperiment(Message, frozen=True, tag="training.stop_experiment.v1"):
    experiment_id: Id


class ResumeExperiment(Message, frozen=True, tag="training.resume_experiment.v1"):
    experiment_id: Id


class PromoteTrial(Message, frozen=True, tag="training.promote_trial.v1"):
    experiment_id: Id
    trial: int
    evaluation_id: Id
    export_id: Id
    format: Keyword = "onnx"


# --- events ---------------------------------------------------------------------------------


class ExperimentCreated(Message, frozen=True, tag="training.experiment_created.v1"):
    """``actor`` (the envelope's) is who created it."""

    experiment_id: str
    project_id: str
    split_id: str
    name: str
    architecture_type: str
    search_config: dict[str, Param]
    objectives: list[Objective]
    max_trials: int
    budget: Budget
    pruning: Pruning
    seed: int


class TrialStarted(Message, frozen=True, tag="training.trial_started.v1"):
    experiment_id: str
    trial: int
    run_id: str
    #: The sampled hyperparameters, fixed ones included (what the run's StartRun carries).
    params: dict[str, Any]


class TrialPruned(Message, frozen=True, tag="training.trial_pruned.v1"):
    experiment_id: str
    trial: int
    run_id: str
    epoch: int
    #: The pruning metric's value at ``epoch``.
    value: float


class TrialCompleted(Message, frozen=True, tag="training.trial_completed.v1"):
    experiment_id: str
    trial: int
    run_id: str
    #: One value per objective metric.
    values: dict[str, float]


class TrialFailed(Message, frozen=True, tag="training.trial_failed.v1"):
    experiment_id: str
    trial: int
    run_id: str
    code: str
    message: str


class FrontUpdated(Message, frozen=True, tag="training.front_updated.v1"):
    experiment_id: str
    #: Trial numbers on the Pareto front (the best trial for one objective).
    front: list[int]
    #: Metric → its best trial.
    best: dict[str, int]
    #: Hyperparameter → importance for the first objective.
    importances: dict[str, float]


class ExperimentStopped(Message, frozen=True, tag="training.experiment_stopped.v1"):
    experiment_id: str


class ExperimentResumed(Message, frozen=True, tag="training.experiment_resumed.v1"):
    experiment_id: str


class ExperimentCompleted(Message, frozen=True, tag="training.experiment_completed.v1"):
    experiment_id: str
    trials: int
    reason: str  # one of REASONS


class TrialPromoted(Message, frozen=True, tag="training.trial_promoted.v1"):
    experiment_id: str
    trial: int
    run_id: str
    evaluation_id: str
    export_id: str


Command = CreateExperiment | StopExperiment | ResumeExperiment | PromoteTrial
Event = (
    ExperimentCreated
    | TrialStarted
    | TrialPruned
    | TrialCompleted
    | TrialFailed
    | FrontUpdated
    | ExperimentStopped
    | ExperimentResumed
    | ExperimentCompleted
    | TrialPromoted
)
#: Every experiment event type, for ``isinstance``: a run's projector skips them.
EXPERIMENT_EVENTS: Final[tuple[type[Message], ...]] = (
    ExperimentCreated,
    TrialStarted,
    TrialPruned,
    TrialCompleted,
    TrialFailed,
    FrontUpdated,
    ExperimentStopped,
    ExperimentResumed,
    ExperimentCompleted,
    TrialPromoted,
)
#: Events of a trial: what rebuilds a search.
TrialEvent = TrialStarted | TrialPruned | TrialCompleted | TrialFailed

ALL: tuple[type[Message], ...] = (
    CreateExperiment,
    StopExperiment,
    ResumeExperiment,
    PromoteTrial,
    ExperimentCreated,
    TrialStarted,
    TrialPruned,
    TrialCompleted,
    TrialFailed,
    FrontUpdated,
    ExperimentStopped,
    ExperimentResumed,
    ExperimentCompleted,
    TrialPromoted,
)


# --- checks ---------------------------------------------------------------------------------

#: A problem of a command: (field, message).
Problem = tuple[str, str]


def check_experiment(cmd: CreateExperiment) -> Problem | None:
    """The first problem of ``cmd`` as (field, message), or None when it can be searched. The
    gateway answers it as a 422 and the trainer as VALIDATION_ERROR, so both say the same."""
    from contracts.experiment_checks import check  # lazily: see that module's docstring

    return check(cmd)


def check_task(cmd: CreateExperiment, task_type: str) -> Problem | None:
    """The first way ``cmd`` does not fit a project of ``task_type`` (its family, a model it
    names, an objective its runs cannot measure) as (field, message), or None. The gateway
    answers it as a 422 VALIDATION_ERROR, as it answers a run's model of the other task."""
    from contracts.experiment_checks import check_task as check  # lazily, as above

    return check(cmd, task_type)

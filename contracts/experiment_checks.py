"""The checks of a ``CreateExperiment``: ``contracts.experiments.check_experiment`` runs them.

Apart from ``contracts.experiments`` because they read the hyperparameters' bounds from
``contracts.training``, which imports ``contracts.experiments`` for its ``Event`` union.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from contracts import training
from contracts.experiments import (
    ARCHITECTURE_TYPES,
    DETECTION_FAMILY,
    DIRECTIONS,
    MAX_CHOICES,
    MAX_CONCURRENT_TRIALS,
    MAX_EPOCHS_PER_TRIAL,
    MAX_OBJECTIVES,
    MAX_TRIALS,
    METRICS,
    MIN_WALL_TIME_S,
    MODEL_FAMILIES,
    NAME_MAX,
    PRUNERS,
    SEARCHABLE,
    SEED_MAX,
    TASK_METRICS,
    Categorical,
    CreateExperiment,
    Fixed,
    FloatRange,
    IntRange,
    Param,
    Problem,
    Scalar,
)


def check(cmd: CreateExperiment) -> Problem | None:
    """The first problem of ``cmd`` as (field, message), or None."""
    steps = (_check_head, _check_space, _check_sizes, _check_objectives, _check_budget,
             _check_pruning)  # fmt: skip
    for step in steps:
        problem = step(cmd)
        if problem is not None:
            return problem
    return None


def _check_head(cmd: CreateExperiment) -> Problem | None:
    if not cmd.name.strip():
        return "name", "an experiment needs a name"
    if len(cmd.name) > NAME_MAX:
        return "name", f"a name has at most {NAME_MAX} characters"
    if cmd.architecture_type not in ARCHITECTURE_TYPES:
        return "architecture_type", f"must be one of {', '.join(ARCHITECTURE_TYPES)}"
    if not 1 <= cmd.max_trials <= MAX_TRIALS:
        return "max_trials", f"must be between 1 and {MAX_TRIALS}"
    if not 0 <= cmd.seed <= SEED_MAX:
        return "seed", f"must be between 0 and {SEED_MAX}"
    return None


def _check_space(cmd: CreateExperiment) -> Problem | None:
    for name, param in cmd.search_config.items():
        field = f"search_config.{name}"
        if name == "epochs":
            return field, "epochs is not searched: set budget.epochs_per_trial"
        if name not in SEARCHABLE:
            return field, f"unknown hyperparameter; searchable: {', '.join(SEARCHABLE)}"
        problem = _check_param(name, param, cmd.architecture_type)
        if problem is not None:
            sub, message = problem
            return (f"{field}.{sub}" if sub else field), message
    return None


def _check_sizes(cmd: CreateExperiment) -> Problem | None:
    """An image size the space can give below the least of a model it can give: each trial
    drawn so would be refused when it starts (the trainer's rule), failing one by one."""
    size = cmd.search_config.get("image_size")
    if size is None:
        return None
    model = cmd.search_config.get("model")
    if isinstance(model, Fixed | Categorical):
        models = [model.value] if isinstance(model, Fixed) else list(model.choices)
    else:
        models = list(MODEL_FAMILIES.get(cmd.architecture_type, ()))
    backbones = [m for m in models if m != "smallcnn"]
    if isinstance(size, Fixed | Categorical):
        values = [size.value] if isinstance(size, Fixed) else list(size.choices)
        least = min(values, key=float)
        sub = "value" if isinstance(size, Fixed) else f"choices.{values.index(least)}"
    else:
        least, sub = size.low, "low"
    if not backbones or float(least) >= training.TORCHVISION_MIN_SIZE:
        return None
    return f"search_config.image_size.{sub}", (
        f"must be at least {training.TORCHVISION_MIN_SIZE} for {backbones[0]}, which this "
        f"search may train, not {least}"
    )


def _check_param(name: str, param: Param, family: str) -> Problem | None:
    if isinstance(param, Categorical):
        if not param.choices:
            return "choices", "an empty list of choices searches nothing"
        if len(param.choices) > MAX_CHOICES:
            return "choices", f"at most {MAX_CHOICES} choices"
        if len(set(map(repr, param.choices))) != len(param.choices):
            return "choices", "a choice is repeated"
        for i, choice in enumerate(param.choices):
            message = _check_value(name, choice, family)
            if message is not None:
                return f"choices.{i}", message
        return None
    if isinstance(param, Fixed):
        message = _check_value(name, param.value, family)
        return None if message is None else ("value", message)
    return _check_range(name, param)


def _check_range(name: str, param: IntRange | FloatRange) -> Problem | None:
    kind = SEARCHABLE[name]
    if kind is str:
        return "type", f"{name} takes words: use categorical or fixed"
    if isinstance(param, FloatRange) and kind is int:
        return "type", f"{name} is a whole number: use an int range"
    if isinstance(param, IntRange) and kind is float:
        return "type", f"{name} is a real number: use a float range"
    if not (math.isfinite(param.low) and math.isfinite(param.high)):
        return "low", "the bounds must be finite numbers"
    if param.low > param.high:
        return "low", "low must not exceed high"
    if param.log and param.low <= 0:
        return "low", "a log range needs low > 0"
    step = param.step
    if step is not None and not (math.isfinite(step) and step > 0):
        return "step", "step must be positive"
    if param.log and step not in (None, 1):
        return "step", "a log range takes no step"
    for end in ("low", "high"):
        message = _check_value(name, getattr(param, end), "any")
        if message is not None:
            return end, message
    return None


def _check_value(name: str, value: Scalar, family: str) -> str | None:
    """Why ``value`` cannot be hyperparameter ``name`` (in ``family`` for a model), or None."""
    kind = SEARCHABLE[name]
    accepted = (int, float) if kind is float else kind  # an int is a fine real number
    if isinstance(value, bool) or not isinstance(value, accepted):
        return f"{name} takes a {kind.__name__}, not {value!r}"
    if name == "model":
        if value not in MODEL_FAMILIES["any"] and value not in MODEL_FAMILIES[DETECTION_FAMILY]:
            return f"unknown model {value!r}"
        if value not in MODEL_FAMILIES[family]:
            return f"model {value!r} is not in the {family} family"
        return None
    choices = training.HYPERPARAMETER_CHOICES.get(name)
    if choices is not None:
        return None if value in choices else f"{name} must be one of {', '.join(choices)}"
    return _out_of_bounds(training.hyperparameter_bounds(name), value)


def _out_of_bounds(bounds: Mapping[str, Any], value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    tests = {
        "ge": (lambda b: value >= b, ">="),
        "gt": (lambda b: value > b, ">"),
        "le": (lambda b: value <= b, "<="),
        "lt": (lambda b: value < b, "<"),
    }
    for key, (holds, sign) in tests.items():
        if key in bounds and not holds(bounds[key]):
            return f"must be {sign} {bounds[key]}"
    return None


def _check_objectives(cmd: CreateExperiment) -> Problem | None:
    if not cmd.objectives:
        return "objectives", "at least one objective"
    if len(cmd.objectives) > MAX_OBJECTIVES:
        return "objectives", f"at most {MAX_OBJECTIVES} objectives"
    seen: set[str] = set()
    for i, objective in enumerate(cmd.objectives):
        if objective.metric not in METRICS:
            return f"objectives.{i}.metric", f"must be one of {', '.join(METRICS)}"
        if objective.direction not in DIRECTIONS:
            return f"objectives.{i}.direction", f"must be one of {', '.join(DIRECTIONS)}"
        if objective.metric in seen:
            return f"objectives.{i}.metric", f"{objective.metric} is already an objective"
        seen.add(objective.metric)
    return None


def _check_budget(cmd: CreateExperiment) -> Problem | None:
    budget = cmd.budget
    if not 1 <= budget.epochs_per_trial <= MAX_EPOCHS_PER_TRIAL:
        return "budget.epochs_per_trial", f"must be between 1 and {MAX_EPOCHS_PER_TRIAL}"
    if not 1 <= budget.max_concurrent_trials <= MAX_CONCURRENT_TRIALS:
        return "budget.max_concurrent_trials", f"must be between 1 and {MAX_CONCURRENT_TRIALS}"
    wall = budget.wall_time_s
    if wall is not None and not (math.isfinite(wall) and wall >= MIN_WALL_TIME_S):
        return "budget.wall_time_s", "a wall-time budget below 1 s cannot fit one epoch"
    return None


def _check_pruning(cmd: CreateExperiment) -> Problem | None:
    pruning = cmd.pruning
    if pruning.kind not in PRUNERS:
        return "pruning.kind", f"must be one of {', '.join(PRUNERS)}"
    if pruning.kind != "none" and len(cmd.objectives) > 1:
        return "pruning.kind", "several objectives cannot be pruned: use none"
    if not 0 <= pruning.warmup_epochs <= MAX_EPOCHS_PER_TRIAL:
        return "pruning.warmup_epochs", f"must be between 0 and {MAX_EPOCHS_PER_TRIAL}"
    return None


def check_task(cmd: CreateExperiment, task_type: str) -> Problem | None:
    """The first way ``cmd`` does not fit a project of ``task_type``, or None: a detection
    project searches the detectors' family, a classification project any other; a model named
    in the space must be a detector or a classifier as the project trains; every objective
    must be a metric that task's runs measure. Unknown names are left to ``check``."""
    detection = task_type == "detection"
    wanted = "a detector" if detection else "a classifier"
    if cmd.architecture_type in ARCHITECTURE_TYPES and detection != (
        cmd.architecture_type == DETECTION_FAMILY
    ):
        others = [t for t in ARCHITECTURE_TYPES if t != DETECTION_FAMILY]
        families = [DETECTION_FAMILY, "any"] if detection else others
        message = f"a {task_type} project searches {wanted}'s family: one of {', '.join(families)}"
        return "architecture_type", message
    models = MODEL_FAMILIES[DETECTION_FAMILY] if detection else MODEL_FAMILIES["any"]
    for field, model in _models(cmd.search_config):
        known = model in MODEL_FAMILIES["any"] or model in MODEL_FAMILIES[DETECTION_FAMILY]
        if known and model not in models:
            message = f"a {task_type} project trains {wanted}, not {model!r}: one of "
            return field, message + ", ".join(models)
    measured = TASK_METRICS.get(task_type, TASK_METRICS["classification"])
    for i, objective in enumerate(cmd.objectives):
        if objective.metric in METRICS and objective.metric not in measured:
            message = f"a {task_type} project's runs do not measure {objective.metric}: one of "
            return f"objectives.{i}.metric", message + ", ".join(measured)
    return None


def _models(space: Mapping[str, Param]) -> list[tuple[str, Any]]:
    """The models ``space`` names, each with its field (``search_config.model.choices.0``)."""
    param = space.get("model")
    if isinstance(param, Categorical):
        return [(f"search_config.model.choices.{i}", m) for i, m in enumerate(param.choices)]
    if isinstance(param, Fixed):
        return [("search_config.model.value", param.value)]
    return []

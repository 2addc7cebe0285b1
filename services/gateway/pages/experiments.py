"""The training page's experiments tab: start a search over models and learning rates with one or
several objectives, watch its trials arrive live, read the objective over the trials and the
trade-off of two objectives with the Pareto front, and promote a trial to an export.

The form offers exactly what the contract accepts for the project's task (``contracts.experiments``:
the families and their models, the metrics, directions, pruners and bounds; a detection project's
are the detectors and their mAP); the API checks it again. The list of
the project's searches is a fragment of ``GET /api/experiments`` (``FRAGMENTS``); the selected
search is drawn from ``GET /api/experiments/{id}`` and kept live by the experiment's SSE stream
(``static/js/experiments.js``). Imports the experiments' contract and the pages' foundation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from contracts import experiments as x
from services.gateway.api.params import MaybeQueryId, PathId
from services.gateway.gateway import GatewayDep
from services.gateway.pages.home import can, project_context
from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import render

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/experiments"): "fragments/experiments/list.html",
}


@dataclass(frozen=True)
class Metric:
    """An objective the form offers: its name, how people read it, its usual direction."""

    name: str
    label: str
    usual: str
    help: str


#: The metrics in the order the form lists them; the contract's list decides which exist.
METRIC_TEXT: Final = {
    "val_accuracy": ("Validation accuracy", "maximize", "Share of validation images right."),
    "val_loss": ("Validation loss", "minimize", "Cross-entropy on the validation subset."),
    "macro_f1": ("Macro F1", "maximize", "F1 averaged over the classes (an evaluation)."),
    "latency_ms": ("Latency (ms)", "minimize", "Median forward time of one image."),
    "params": ("Parameters", "minimize", "Weights in the model: its size."),
    "val_map": ("Validation mAP", "maximize", "A detector's COCO mAP@[.5:.95] on validation."),
}
METRICS: Final = tuple(
    Metric(name, *METRIC_TEXT.get(name, (name, "maximize", ""))) for name in x.METRICS
)
PRUNER_TEXT: Final = {
    "none": "none",
    "median": "median of the other trials",
    "successive_halving": "successive halving",
}
#: The bounds the form's number fields carry (the contract's).
LIMITS: Final = {
    "max_trials": x.MAX_TRIALS,
    "epochs_per_trial": x.MAX_EPOCHS_PER_TRIAL,
    "max_concurrent_trials": x.MAX_CONCURRENT_TRIALS,
    "wall_time_s": x.MIN_WALL_TIME_S,
    "seed": x.SEED_MAX,
    "name": x.NAME_MAX,
}
_CREATE: Final = {f.name: f.default for f in msgspec.structs.fields(x.CreateExperiment)}
#: What the form starts from: the contract's own defaults.
DEFAULTS: Final = {
    "max_trials": _CREATE["max_trials"],
    "seed": _CREATE["seed"],
    "budget": x.Budget(),
    "pruning": x.Pruning(),
    "objectives": {o.metric: o.direction for o in x.default_objectives()},
}
#: The learning-rate range the form suggests (the API's default range is the same).
LR_LOW: Final = 1e-4
LR_HIGH: Final = 1e-1


def family_models(task_type: str = "classification") -> list[tuple[str, tuple[str, ...]]]:
    """Every model of the task once, in the order ``any`` tries them, with its families."""
    if task_type == "detection":
        return [(m, (x.DETECTION_FAMILY,)) for m in x.MODEL_FAMILIES[x.DETECTION_FAMILY]]
    return [
        (model, tuple(f for f in x.FAMILIES if model in x.MODEL_FAMILIES[f]))
        for model in x.MODEL_FAMILIES["any"]
    ]


def task_form(task_type: str) -> dict[str, Any]:
    """What the form offers a project of ``task_type``: its families, models, metrics and
    default objectives (a detection project's "any" is the detectors')."""
    detection = task_type == "detection"
    families = [f for f in x.ARCHITECTURE_TYPES if (f == x.DETECTION_FAMILY) == detection]
    measured = x.TASK_METRICS["detection" if detection else "classification"]
    objectives = {o.metric: o.direction for o in x.default_objectives(task_type)}
    return {
        "families": ["any", *families] if detection else families,
        "models": family_models(task_type),
        "metrics": [m for m in METRICS if m.name in measured],
        "defaults": DEFAULTS | {"objectives": objectives},
    }


@router.get("/projects/{project_id}/training/experiments")
async def experiments_page(
    request: Request,
    project_id: PathId,
    principal: PageUser,
    gateway: GatewayDep,
    experiment: MaybeQueryId = None,
) -> Response:
    """The project's searches; ``?experiment=`` selects one of them."""
    shared = await project_context(gateway, principal, project_id)
    return render(
        request,
        "training/experiments.html",
        tab="training",
        editor=can(shared["role"], "editor"),
        selected=experiment or "",
        directions=x.DIRECTIONS,
        pruners=[(kind, PRUNER_TEXT.get(kind, kind)) for kind in x.PRUNERS],
        limits=LIMITS,
        lr=(LR_LOW, LR_HIGH),
        **task_form(shared["project"].get("task_type", "classification")),
        **shared,
    )

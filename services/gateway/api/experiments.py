"""REST for experiments: a search over models and hyperparameters (Optuna, in the trainer), each
trial a queued run. Create (202, a task like every job), list, read (trials, best per objective,
Pareto front, importances), stop, resume, promote a trial (evaluate and export its run). Live:
the experiment SSE (``training``) and ``/ws/experiments/{id}`` (``training_sockets``).

A body is checked for shape here and for content by the contract's ``check_experiment``, the very
check the trainer makes, so both answer the same 422 with the same field; and against the
project's task by ``check_task`` (as a run's model is, with the same VALIDATION_ERROR): a
detection project searches detectors ("any" means every detector) by their validation mAP, a
classification project classifiers. Access is a run's: a viewer of the project reads, an editor
changes. Imports the gateway's ports, the access rules,
``contracts`` and the read models; no other route.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from contracts import common
from contracts import experiments as e
from contracts import exports as x
from contracts import training as t
from services.gateway.access import project_of, require, require_of, visible_projects
from services.gateway.api.idempotent import idempotent, keyed_id
from services.gateway.api.params import BodyId, Limit, MaybeFilter, MaybeQueryId, Offset, PathId
from services.gateway.auth.deps import CurrentUser, actor_of
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.readmodels import experiments as read
from services.gateway.readmodels.projects import get_project
from services.gateway.readmodels.tasks import task_link
from services.kernel.sqlite import session

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)
#: The highest trial number a path may name (a search numbers its trials from 0).
TRIAL_MAX = 1_000_000
TrialNumber = Annotated[int, Path(ge=0, le=TRIAL_MAX)]
Scalar = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CategoricalIn(_Strict):
    type: Literal["categorical"]
    choices: list[Scalar]


class IntRangeIn(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False


class FloatRangeIn(_Strict):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = None
    log: bool = False


class FixedIn(_Strict):
    type: Literal["fixed"]
    value: Scalar


ParamIn = Annotated[
    CategoricalIn | IntRangeIn | FloatRangeIn | FixedIn, Field(discriminator="type")
]


class ObjectiveIn(_Strict):
    metric: str = Field(description=", ".join(e.METRICS))
    direction: str = Field(description=", ".join(e.DIRECTIONS))


class BudgetIn(_Strict):
    epochs_per_trial: int = 3
    max_concurrent_trials: int = 1
    wall_time_s: float | None = None


class PruningIn(_Strict):
    kind: str = Field("median", description=", ".join(e.PRUNERS))
    warmup_epochs: int = 1


class ExperimentIn(_Strict):
    """The contract's ``CreateExperiment``. ``project_id`` and ``split_id`` are required (a
    422 names the one missing); ``pruning`` defaults to none with several objectives; on a
    detection project ``any`` is the detectors' family and the default objective is
    ``val_map`` (mAP@[.5:.95]) maximised."""

    project_id: BodyId | None = None
    split_id: BodyId | None = None
    name: str = Field(max_length=e.NAME_MAX)
    architecture_type: str = Field("any", description=", ".join(e.ARCHITECTURE_TYPES))
    search_config: dict[str, ParamIn] = Field(default_factory=dict)
    max_trials: int = 10
    objectives: list[ObjectiveIn] | None = None
    budget: BudgetIn = Field(default_factory=BudgetIn)
    pruning: PruningIn | None = None
    seed: int = 0


class PromoteIn(_Strict):
    format: str = Field("onnx", description=", ".join(x.FORMATS))


@router.post("", status_code=202)
async def create_experiment(body: ExperimentIn, request: Request, gateway: GatewayDep) -> Response:
    """Start a search; its trials queue as runs. 202 with the experiment and its task."""
    project_id = _given(body.project_id, "project_id")
    await require(request, project_id, "editor", field="project_id")
    split_id = _given(body.split_id, "split_id")
    await _split_of(request, split_id, project_id)
    task_type = await _task_of(gateway, project_id)
    command = _command(body, project_id, split_id, request, task_type)
    problem = e.check_task(command, task_type) or e.check_experiment(command)
    if problem is not None:
        raise ApiError(common.VALIDATION_ERROR, f"{problem[0]}: {problem[1]}", field=problem[0])

    async def run() -> Response:
        accepted = await gateway.send(e.ExperimentSubjects.CREATE_EXPERIMENT, command, request)
        return await _answer(gateway, request, command.experiment_id, accepted.sequence)

    async def existing() -> Response | None:  # a retry whose first try started the search
        async with session(gateway.engine) as db:
            known = await read.experiment_detail(db, experiment_id=command.experiment_id)
        return await _answer(gateway, request, command.experiment_id, 0) if known else None

    return await idempotent(request, gateway, actor_of(request), run, job=True, existing=existing)


@router.get("")
async def list_experiments(
    db: DbDep,
    request: Request,
    principal: CurrentUser,
    project_id: MaybeQueryId = None,
    status: MaybeFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Experiments, newest first, of a project (or of every project one may read)."""
    if project_id:
        await require(request, project_id, "viewer", field="project_id")
    page = await read.list_experiments(
        db,
        project_id=project_id,
        status=status,
        among=visible_projects(principal),
        limit=limit,
        offset=offset,
    )
    items = [row.public() for row in page.items]
    return ok({"items": items, "total": page.total, "limit": limit, "offset": offset})


@router.get("/{experiment_id}")
async def get_experiment(experiment_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """The experiment with its trials (parameters, state, metrics, run), the best trial per
    objective, the Pareto front and the parameters' importances."""
    await gateway.fresh(t.STREAM, e.experiment_subject(experiment_id))
    await require_of(request, "experiment", experiment_id, "viewer")
    return ok(await _detail(gateway, experiment_id))


@router.post("/{experiment_id}/stop", status_code=202)
async def stop_experiment(experiment_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """Stop the search: its running trials stop, its queued ones are dropped."""
    await _search_to_change(request, gateway, experiment_id)
    command = e.StopExperiment(
        experiment_id=experiment_id, actor=actor_of(request), correlation_id=REQUEST_ID.get()
    )
    accepted = await gateway.send(e.ExperimentSubjects.STOP_EXPERIMENT, command, request)
    return await _answer(gateway, request, experiment_id, accepted.sequence)


@router.post("/{experiment_id}/resume", status_code=202)
async def resume_experiment(
    experiment_id: PathId, request: Request, gateway: GatewayDep
) -> Response:
    """Search on: trials start again until ``max_trials`` (finished ones are not run again)."""
    await _search_to_change(request, gateway, experiment_id)
    command = e.ResumeExperiment(
        experiment_id=experiment_id, actor=actor_of(request), correlation_id=REQUEST_ID.get()
    )
    accepted = await gateway.send(e.ExperimentSubjects.RESUME_EXPERIMENT, command, request)
    return await _answer(gateway, request, experiment_id, accepted.sequence)


@router.post("/{experiment_id}/trials/{trial}/promote", status_code=202)
async def promote_trial(
    experiment_id: PathId,
    trial: TrialNumber,
    request: Request,
    gateway: GatewayDep,
    body: PromoteIn | None = None,
) -> Response:
    """Evaluate the trial's run on the test subset and export it: 202 with the evaluation's
    and the export's ids (the export is the task)."""
    await _search_to_change(request, gateway, experiment_id)
    async with session(gateway.engine) as db:
        row = await read.get_trial(db, experiment_id=experiment_id, trial=trial)
    if row is None:
        message = f"trial {trial} of experiment {experiment_id} does not exist"
        raise ApiError(common.NOT_FOUND, message, field="trial")
    fmt = body.format if body else "onnx"
    if fmt not in x.FORMATS:
        message = f"format must be one of {', '.join(x.FORMATS)}"
        raise ApiError(common.VALIDATION_ERROR, message, field="format")
    evaluation_id, export_id = keyed_id(request, "evaluation"), keyed_id(request, "export")
    command = e.PromoteTrial(
        experiment_id=experiment_id,
        trial=trial,
        evaluation_id=evaluation_id,
        export_id=export_id,
        format=fmt,
        actor=actor_of(request),
        correlation_id=REQUEST_ID.get(),
    )

    async def run() -> Response:
        await gateway.send(e.ExperimentSubjects.PROMOTE_TRIAL, command, request)
        links = {
            "evaluation": f"/api/v1/evaluation/{evaluation_id}",
            "export": f"/api/v1/export/{export_id}",
        }
        data: dict[str, Any] = {"experiment_id": experiment_id, "trial": trial}
        data |= {"run_id": row.run_id, "evaluation_id": evaluation_id, "export_id": export_id}
        data |= {"format": fmt, "links": links} | task_link(export_id)
        location = str(request.url_for("get_export", export_id=export_id))
        return ok(data, status=202, headers={"Location": location})

    return await idempotent(request, gateway, actor_of(request), run, job=True)


# --- helpers ----------------------------------------------------------------------------------


def _given(value: str | None, field: str) -> str:
    if value is None:
        raise ApiError(common.VALIDATION_ERROR, f"{field}: field required", field=field)
    return value


async def _split_of(request: Request, split_id: str, project_id: str) -> None:
    """The split exists, may be read, and is one of the project's."""
    await require_of(request, "split", split_id, "viewer", field="split_id")
    async with session(request.app.state.gateway.engine) as db:
        owner = await project_of(db, "split", split_id)
    if owner != project_id:
        message = f"split {split_id} is not a split of project {project_id}"
        raise ApiError(common.VALIDATION_ERROR, message, field="split_id")


async def _task_of(gateway: Gateway, project_id: str) -> str:
    """The project's task type (``require`` found the project)."""
    async with session(gateway.engine) as db:
        project = await get_project(db, project_id=project_id)
    return project.task_type if project is not None else "classification"


def _command(
    body: ExperimentIn, project_id: str, split_id: str, request: Request, task_type: str
) -> e.CreateExperiment:
    """The contract's command of ``body`` for a project of ``task_type``; the experiment's id
    derives from the request's Idempotency-Key, so a retry names the same experiment and never
    starts a second search."""
    fields: dict[str, Any] = body.model_dump(exclude={"project_id", "split_id"}, exclude_none=True)
    fields["architecture_type"] = e.family_for_task(body.architecture_type, task_type)
    default = [msgspec.to_builtins(o) for o in e.default_objectives(task_type)]
    objectives = default if body.objectives is None else fields["objectives"]
    if body.pruning is None and len(objectives) > 1:
        fields["pruning"] = {"kind": "none"}  # Optuna cannot prune several objectives
    fields |= {
        "experiment_id": keyed_id(request, "experiment"),
        "message_id": keyed_id(request, "create_experiment"),
        "project_id": project_id,
        "split_id": split_id,
        "objectives": objectives,
        "actor": actor_of(request),
        "correlation_id": REQUEST_ID.get(),
    }
    try:
        return msgspec.convert(fields, e.CreateExperiment)
    except msgspec.ValidationError as exc:  # what pydantic let through but msgspec cannot hold
        raise ApiError(common.VALIDATION_ERROR, str(exc), field=_path_of(exc)) from None


def _path_of(exc: msgspec.ValidationError) -> str | None:
    """``budget.epochs_per_trial`` of msgspec's "... - at `$.budget.epochs_per_trial`"."""
    _, at, path = str(exc).rpartition("at `$")
    return path.rstrip("`").lstrip(".").replace("[", ".").replace("]", "") if at else None


async def _search_to_change(request: Request, gateway: Gateway, experiment_id: str) -> None:
    """The caller edits the experiment's project, and it is a search (not a run's own)."""
    await gateway.fresh(t.STREAM, e.experiment_subject(experiment_id))
    await require_of(request, "experiment", experiment_id, "editor")
    async with session(gateway.engine) as db:
        if await read.get_experiment(db, experiment_id=experiment_id) is None:
            raise ApiError(common.NOT_FOUND, f"experiment {experiment_id} does not exist")


async def _detail(gateway: Gateway, experiment_id: str) -> dict[str, Any]:
    async with session(gateway.engine) as db:
        detail = await read.experiment_detail(db, experiment_id=experiment_id)
    if detail is None:
        raise ApiError(common.NOT_FOUND, f"experiment {experiment_id} does not exist")
    return detail


async def _answer(
    gateway: Gateway, request: Request, experiment_id: str, sequence: int
) -> Response:
    """202 with the experiment as the read model shows it once ``sequence`` is applied, its
    task and its Location."""
    await gateway.caught_up(t.STREAM, sequence)
    async with session(gateway.engine) as db:
        detail = await read.experiment_detail(db, experiment_id=experiment_id)
    data = detail if detail is not None else {"id": experiment_id, "pending": True}
    location = str(request.url_for("get_experiment", experiment_id=experiment_id))
    return ok(data | task_link(experiment_id), status=202, headers={"Location": location})

"""REST, SSE and WebSocket for training: submit, queue, runs, stop, resume, compare, streams."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common
from contracts import training as c
from services.gateway.access import (
    project_of,
    require,
    require_of,
    viewable,
    visible_projects,
)
from services.gateway.api.idempotent import idempotent, keyed_id
from services.gateway.api.params import BodyId, Limit, MaybeFilter, MaybeQueryId, PathId
from services.gateway.api.training_sockets import (
    experiment_items,
    experiment_rows,
    view_experiment,
)
from services.gateway.auth.deps import STREAM_ROUTE, CurrentUser, actor_of
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, found, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep, pending
from services.gateway.readmodels import training as read
from services.gateway.readmodels.projects import get_project
from services.gateway.readmodels.tasks import task_link
from services.gateway.stream_guard import (
    guarded_sse,
    open_guard,
)
from services.gateway.streams import last_event_id
from services.gateway.training_streams import ending_of, run_feed, sse
from services.kernel.eventstore import check_id
from services.kernel.sqlite import session

router = APIRouter(prefix="/training", tags=["training"], responses=ERROR_RESPONSES)
#: Runs side by side in one comparison.
COMPARE_MAX = 20
#: The longest file or folder name most file systems hold (NAME_MAX), in bytes.
NAME_MAX_BYTES = 255


class _PathChecked(BaseModel):
    """What ``HyperparametersIn`` adds to the contract's bounds: a path a file system can hold."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("pretrained", check_fields=False)  # the field is the subclass's
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        """Refuse here what no file system can hold, rather than fail on it in the trainer."""
        if value is None:
            return None
        if "\0" in value:
            raise ValueError("a path cannot hold a NUL character")
        try:
            parts = os.fsencode(value).split(b"/")
        except UnicodeError:
            raise ValueError("not a file name this server can hold") from None
        if any(len(part) > NAME_MAX_BYTES for part in parts):
            raise ValueError(f"a file or folder name in it is over {NAME_MAX_BYTES} bytes")
        return value


def _hyperparameter(field: msgspec.structs.FieldInfo) -> tuple[Any, Any]:
    """A pydantic field from the contract's: its type (its choices, if any), default and bounds."""
    choices = c.HYPERPARAMETER_CHOICES.get(field.name)
    annotation = Literal[choices] if choices else field.type  # Literal of a tuple: its items
    return annotation, Field(field.default, **c.hyperparameter_bounds(field.name))


if TYPE_CHECKING:  # built below from the contract; to a type checker, the base it extends
    HyperparametersIn = _PathChecked
else:
    # Built from ``contracts.training``'s bounds, so the OpenAPI schema shows the very bounds
    # the command and the trainer hold, written once there.
    HyperparametersIn = create_model(
        "HyperparametersIn",
        __base__=_PathChecked,
        __doc__="Checked here for shape; the trainer checks every value and answers 422 with "
        "the field.",
        **{f.name: _hyperparameter(f) for f in msgspec.structs.fields(c.Hyperparameters)},
    )


class RunSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: BodyId
    split_id: BodyId
    experiment_id: BodyId | None = None
    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)
    if_busy: Literal["queue", "reject"] = "queue"
    #: Devices of one trainer the run trains on at once; batch_size is split between them.
    devices: int = Field(1, ge=1, le=c.MAX_DEVICES)


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int | None = Field(None, ge=1, le=1000)


@router.post("/run", status_code=202)
async def start_run(body: RunSubmit, request: Request, gateway: GatewayDep, db: DbDep) -> Response:
    """Queue a run; it starts when a trainer has a free device. 409 with ``if_busy: reject``."""
    await require(request, body.project_id, "editor", field="project_id")
    if body.experiment_id:
        await _same_project(gateway, body.experiment_id, body.project_id)
    await _model_fits_task(db, body.project_id, body.hyperparameters.model_dump()["model"])
    command = c.StartRun(
        # A retry with the same Idempotency-Key names the same run: it is never queued twice.
        message_id=keyed_id(request, "start_run"),
        run_id=keyed_id(request, "run"),
        experiment_id=body.experiment_id or keyed_id(request, "experiment"),
        project_id=body.project_id,
        split_id=body.split_id,
        hyperparameters=c.Hyperparameters(**body.hyperparameters.model_dump()),
        if_busy=body.if_busy,
        devices=body.devices,
        actor=actor_of(request),
        correlation_id=REQUEST_ID.get(),
    )

    async def run() -> Response:
        accepted = await gateway.send(c.Subjects.START_RUN, command, request)
        queued = {"project_id": command.project_id, "split_id": command.split_id}
        return await _run_answer(
            gateway, request, accepted.aggregate_id, accepted.sequence, 202, queued
        )

    async def existing() -> Response | None:  # a retry whose first try queued the run
        async with session(gateway.engine) as db:
            known = await read.get_run(db, run_id=command.run_id) is not None
        return await _run_answer(gateway, request, command.run_id, 0, 202) if known else None

    return await idempotent(request, gateway, actor_of(request), run, job=True, existing=existing)


async def _model_fits_task(db: AsyncSession, project_id: str, model: str) -> None:
    """422 on ``hyperparameters.model`` when a detector is asked of a classification project
    or a classifier of a detection project (the trainer checks the name itself)."""
    project = await get_project(db, project_id=project_id)
    if project is None:
        return  # ``require`` let it through: the trainer answers for the split
    detection = project.task_type == "detection"
    if detection == (model in c.DETECTORS):
        return
    wanted = "a detector" if detection else "a classifier"
    names = c.DETECTORS if detection else c.MODELS
    raise ApiError(
        common.VALIDATION_ERROR,
        f"a {project.task_type} project trains {wanted}, not {model!r}: one of {', '.join(names)}",
        field="hyperparameters.model",
    )


@router.get("/queue")
async def queue(db: DbDep, gateway: GatewayDep, principal: CurrentUser) -> Response:
    """What runs now and what waits, in order, and which devices are leased by whom. Runs of
    projects one is no member of show only their status and place (an admin sees all)."""
    running, waiting = await read.queue(db)
    shown = await viewable(db, principal)
    return ok(
        {
            "running": [_entry(r, shown) for r in running],
            "queued": [_entry(r, shown) | {"position": i} for i, r in enumerate(waiting, start=1)],
            "leases": await lease_holders(gateway, db, principal),
        }
    )


async def lease_holders(gateway: Gateway, db: AsyncSession, principal: Principal) -> list[Any]:
    """Every device lease; the run of a project the caller is no member of is not named."""
    shown = await viewable(db, principal)
    holders = [msgspec.to_builtins(h) for h in await gateway.leases.holders()]
    if shown is None:
        return holders
    runs = {h["run_id"] for h in holders if h.get("run_id")}
    mine = {
        r for r in runs if (run := await read.get_run(db, run_id=r)) and run.project_id in shown
    }
    return [h | {"run_id": h["run_id"] if h.get("run_id") in mine else None} for h in holders]


def _entry(row: read.RunRow, shown: set[str] | None) -> dict[str, Any]:
    """A run in the queue, whole to whoever may read its project; else its status only."""
    if shown is None or row.project_id in shown:
        return row.public() | {"visible": True}
    return {"id": None, "status": row.status, "visible": False}


@router.get("/runs")
async def list_runs(
    db: DbDep,
    request: Request,
    principal: CurrentUser,
    project_id: MaybeQueryId = None,
    experiment_id: MaybeQueryId = None,
    status: MaybeFilter = None,
    limit: Limit = 100,
) -> Response:
    """Runs, newest first: of a project, or of every project one is a member of."""
    if project_id:
        await require(request, project_id, "viewer", field="project_id")
    rows = await read.list_runs(
        db,
        project_id=project_id,
        experiment_id=experiment_id,
        status=status,
        limit=limit,
        among=visible_projects(principal),
    )
    return ok({"items": [r.public() for r in rows]})


@router.get("/runs/{run_id}")
async def get_run(run_id: PathId, gateway: GatewayDep, request: Request) -> Response:
    """A run with its full metric history and its checkpoints."""
    await _fresh(gateway, run_id)
    await require_of(request, "run", run_id, "viewer")
    async with session(gateway.engine) as db:
        return ok(await _detail(db, run_id))


@router.post("/runs/{run_id}/stop")
async def stop_run(run_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """Stop at the next batch: the last checkpoint is kept and the device freed."""
    await require_of(request, "run", run_id, "editor")
    command = c.StopRun(run_id=run_id, actor=actor_of(request), correlation_id=REQUEST_ID.get())
    accepted = await gateway.send(c.Subjects.STOP_RUN, command, request)
    return await _run_answer(gateway, request, run_id, accepted.sequence, 202)


@router.post("/runs/{run_id}/resume")
async def resume_run(
    run_id: PathId, request: Request, gateway: GatewayDep, body: ResumeIn | None = None
) -> Response:
    """Queue the run again to continue after its last checkpoint; ``epochs`` may be raised."""
    await require_of(request, "run", run_id, "editor")
    epochs = body.epochs if body else None
    command = c.ResumeRun(
        run_id=run_id, epochs=epochs, actor=actor_of(request), correlation_id=REQUEST_ID.get()
    )
    accepted = await gateway.send(c.Subjects.RESUME_RUN, command, request)
    return await _run_answer(gateway, request, run_id, accepted.sequence, 202)


@router.get("/compare")
async def compare(
    gateway: GatewayDep,
    request: Request,
    run_ids: Annotated[str, Query(min_length=1, max_length=COMPARE_MAX * (common.ID_MAX + 1))],
) -> Response:
    """Two or more runs' curves side by side: ``?run_ids=a,b``."""
    ids = [r for r in run_ids.split(",") if r]
    if not 2 <= len(ids) <= COMPARE_MAX:
        raise ApiError(common.VALIDATION_ERROR, f"give 2 to {COMPARE_MAX} run ids", field="run_ids")
    if not all(check(run_id) for run_id in ids):
        raise ApiError(common.VALIDATION_ERROR, "a run id is malformed", field="run_ids")
    for run_id in ids:
        await _fresh(gateway, run_id)
        await require_of(request, "run", run_id, "viewer", field="run_ids")
    async with session(gateway.engine) as db:
        return ok({"runs": [await _detail(db, run_id) for run_id in ids]})


@router.get("/runs/{run_id}/stream", response_class=StreamingResponse, openapi_extra=STREAM_ROUTE)
async def run_stream(run_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """SSE: ``status``, ``progress``, ``epoch_end``, ``checkpoint``, then ``complete`` or
    ``error`` and the stream ends; 204 (stop reconnecting) for a client that has the end;
    ``closed`` if access ends first. Takes a stream token as ``?access_token=``."""
    after = last_event_id(request)
    await _fresh(gateway, run_id)
    guard = await open_guard(request, lambda: require_of(request, "run", run_id, "viewer"))
    # A short session: a stream must not hold a pooled connection for as long as it is open.
    async with session(gateway.engine) as db:
        row = await _run(db, run_id)
    ending, _ = await ending_of(gateway.js, [row], after)
    if ending.over:
        return Response(status_code=204)
    items = run_feed(gateway.broker.connection, run_id, after, ending)
    return _sse_response(guarded_sse((sse(item) async for item in items), guard))


@router.get(
    "/{project_id}/experiments/{experiment_id}/stream",
    response_class=StreamingResponse,
    openapi_extra=STREAM_ROUTE,
)
async def experiment_stream(
    project_id: str, experiment_id: str, request: Request, gateway: GatewayDep
) -> Response:
    """SSE of every run of an experiment, as the original API streamed it; it ends when every
    run has completed or failed (a search: at its ``complete``, after ``trial_started``,
    ``epoch_end`` with its ``trial``, ``trial_pruned``, ``trial_completed``, ``front_updated``),
    204 for a client that has seen that already; ``closed`` if access ends first. Takes a
    stream token as ``?access_token=``."""
    after = last_event_id(request)
    rows = await experiment_rows(gateway, experiment_id, project_id)
    guard = await open_guard(request, lambda: view_experiment(request, experiment_id, rows))
    ending, items = await experiment_items(gateway, experiment_id, rows, after)
    if ending.over:
        return Response(status_code=204)
    return _sse_response(guarded_sse((sse(item) async for item in items), guard))


# --- helpers ----------------------------------------------------------------------------------


def _sse_response(body: Any) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _run_answer(
    gateway: Gateway,
    request: Request,
    run_id: str,
    sequence: int,
    status: int,
    queued: dict[str, str] | None = None,
) -> Response:
    """The run as the read model shows it once ``sequence`` is applied; when that takes longer
    than read-your-writes waits, a pending 202: the run as it was (a stop, a resume) or, just
    queued (``queued``: its project and split), as its command says."""
    if not await gateway.caught_up(c.STREAM, sequence):
        async with session(gateway.engine) as db:
            row = await read.get_run(db, run_id=run_id)
        was = row.public() if row else {"id": run_id, "status": "queued"} | (queued or {})
        location = str(request.url_for("get_run", run_id=run_id))
        return pending(was | task_link(run_id), location=location)
    async with session(gateway.engine) as db:
        row = await _run(db, run_id)
        data = row.public()
        if row.status == "queued":
            data["position"] = await read.queue_position(db, run=row)
    if status == 202:  # the run is the task: its id and where to check on it
        data |= task_link(run_id)
    location = str(request.url_for("get_run", run_id=run_id))
    return ok(data, status=status, headers={"Location": location})


async def _fresh(gateway: Gateway, run_id: str) -> None:
    if check(run_id):
        await gateway.fresh(c.STREAM, c.event_subject(run_id))


def check(run_id: str) -> bool:
    try:
        check_id(run_id)
    except ValueError:
        return False
    return True


async def _run(db: AsyncSession, run_id: str) -> read.RunRow:
    return found(await read.get_run(db, run_id=run_id), f"run {run_id}")


async def _detail(db: AsyncSession, run_id: str) -> dict[str, Any]:
    return found(await read.run_detail(db, run_id=run_id), f"run {run_id}")


async def _same_project(gateway: Gateway, experiment_id: str, project_id: str) -> None:
    """A run joins an experiment of its own project only: an experiment's streams show every
    run queued into it, so another project's run there would show one project to another."""
    async with session(gateway.engine) as db:
        owner = await project_of(db, "experiment", experiment_id)
    if owner is not None and owner != project_id:
        raise ApiError(
            common.VALIDATION_ERROR,
            f"experiment {experiment_id} is not an experiment of project {project_id}",
            field="experiment_id",
        )

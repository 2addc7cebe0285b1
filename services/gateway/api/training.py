"""REST, SSE and WebSocket for training: submit, queue, runs, stop, resume, compare, streams."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common, new_id
from contracts import training as c
from services.gateway.envelope import REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.streams import last_event_id
from services.gateway.training_model import CheckpointRow, EpochRow, RunRow
from services.gateway.training_streams import experiment_feed, run_feed, sse, ws
from services.kernel.eventstore import check_id
from services.kernel.sqlite import session

router = APIRouter(prefix="/training", tags=["training"])
sockets = APIRouter(tags=["training"])
ACTOR = "anonymous"


class HyperparametersIn(BaseModel):
    """Checked here for shape; the trainer checks every value and answers 422 with the field."""

    model_config = ConfigDict(extra="forbid")
    model: str = "smallcnn"
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    schedule: Literal["cosine", "step", "onecycle", "none"] = "cosine"
    weight_decay: float = Field(1e-4, ge=0, le=1)
    image_size: int = Field(64, ge=16, le=1024)
    augmentation: Literal["none", "light", "standard"] = "light"
    class_weights: Literal["none", "auto"] = "none"
    early_stopping_patience: int = Field(0, ge=0, le=1000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    workers: int = Field(0, ge=0, le=32)
    pretrained: str | None = Field(None, max_length=4096)


class RunSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: str = Field(min_length=1, max_length=128)
    split_id: str = Field(min_length=1, max_length=128)
    experiment_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)
    if_busy: Literal["queue", "reject"] = "queue"


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int | None = Field(None, ge=1, le=1000)


@router.post("/run", status_code=202)
async def start_run(body: RunSubmit, request: Request, gateway: GatewayDep) -> Response:
    """Queue a run; it starts when a trainer has a free device. 409 with ``if_busy: reject``."""
    command = c.StartRun(
        run_id=new_id(),
        experiment_id=body.experiment_id or new_id(),
        project_id=body.project_id,
        split_id=body.split_id,
        hyperparameters=c.Hyperparameters(**body.hyperparameters.model_dump()),
        if_busy=body.if_busy,
        actor=ACTOR,
        correlation_id=REQUEST_ID.get(),
    )
    accepted = await gateway.send(c.Subjects.START_RUN, command, request)
    return await _run_answer(gateway, request, accepted.aggregate_id, accepted.sequence, 202)


@router.get("/queue")
async def queue(db: DbDep, gateway: GatewayDep) -> Response:
    """What runs now and what waits, in order, and which devices are leased by whom."""
    running = await _runs(db, statuses=("running", "stopping"))
    waiting = await _runs(db, statuses=("queued",))
    leases = [msgspec.to_builtins(h) for h in await gateway.leases.holders()]
    return ok(
        {
            "running": [r.public() for r in running],
            "queued": [r.public() | {"position": i} for i, r in enumerate(waiting, start=1)],
            "leases": leases,
        }
    )


@router.get("/runs")
async def list_runs(
    db: DbDep,
    project_id: str | None = None,
    experiment_id: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Runs, newest first."""
    query = select(RunRow)
    if project_id:
        query = query.where(col(RunRow.project_id) == project_id)
    if experiment_id:
        query = query.where(col(RunRow.experiment_id) == experiment_id)
    if status:
        query = query.where(col(RunRow.status) == status)
    rows = (await db.exec(query.order_by(col(RunRow.created_at).desc()).limit(limit))).all()
    return ok({"items": [r.public() for r in rows]})


@router.get("/runs/{run_id}")
async def get_run(run_id: str, gateway: GatewayDep) -> Response:
    """A run with its full metric history and its checkpoints."""
    await _fresh(gateway, run_id)
    async with session(gateway.engine) as db:
        return ok(await _detail(db, run_id))


@router.post("/runs/{run_id}/stop")
async def stop_run(run_id: str, request: Request, gateway: GatewayDep) -> Response:
    """Stop at the next batch: the last checkpoint is kept and the device freed."""
    command = c.StopRun(run_id=run_id, actor=ACTOR, correlation_id=REQUEST_ID.get())
    accepted = await gateway.send(c.Subjects.STOP_RUN, command, request)
    return await _run_answer(gateway, request, run_id, accepted.sequence, 202)


@router.post("/runs/{run_id}/resume")
async def resume_run(
    run_id: str, request: Request, gateway: GatewayDep, body: ResumeIn | None = None
) -> Response:
    """Queue the run again to continue after its last checkpoint; ``epochs`` may be raised."""
    epochs = body.epochs if body else None
    command = c.ResumeRun(
        run_id=run_id, epochs=epochs, actor=ACTOR, correlation_id=REQUEST_ID.get()
    )
    accepted = await gateway.send(c.Subjects.RESUME_RUN, command, request)
    return await _run_answer(gateway, request, run_id, accepted.sequence, 202)


@router.get("/compare")
async def compare(gateway: GatewayDep, run_ids: Annotated[str, Query(min_length=1)]) -> Response:
    """Two or more runs' curves side by side: ``?run_ids=a,b``."""
    ids = [r for r in run_ids.split(",") if r]
    if len(ids) < 2:
        raise ApiError(common.VALIDATION_ERROR, "give at least two run ids", field="run_ids")
    for run_id in ids:
        await _fresh(gateway, run_id)
    async with session(gateway.engine) as db:
        return ok({"runs": [await _detail(db, run_id) for run_id in ids]})


@router.get("/runs/{run_id}/stream", response_class=StreamingResponse)
async def run_stream(run_id: str, request: Request, db: DbDep, gateway: GatewayDep) -> Response:
    """SSE: ``status``, ``progress``, ``epoch_end``, ``checkpoint``, ``complete``, ``error``."""
    await _run(db, run_id)
    items = run_feed(gateway.broker.connection, run_id, last_event_id(request))
    return _sse_response(sse(item) async for item in items)


@router.get("/{project_id}/experiments/{experiment_id}/stream", response_class=StreamingResponse)
async def experiment_stream(
    project_id: str, experiment_id: str, request: Request, db: DbDep, gateway: GatewayDep
) -> Response:
    """SSE of every run of an experiment, as the original API streamed it."""
    runs = await _experiment_runs(db, experiment_id, project_id)
    nc = gateway.broker.connection
    items = experiment_feed(nc, experiment_id, runs, last_event_id(request))
    return _sse_response(sse(item) async for item in items)


@sockets.websocket("/ws/experiments/{experiment_id}")
async def experiment_socket(websocket: WebSocket, experiment_id: str) -> None:
    """``{"type", "payload"}`` messages with the same content as the experiment's SSE."""
    gateway: Gateway = websocket.app.state.gateway
    after = websocket.query_params.get("last_event_id", "0")
    await websocket.accept()
    async with session(gateway.engine) as db:
        runs = await _experiment_runs(db, experiment_id, None)
    try:
        items = experiment_feed(gateway.broker.connection, experiment_id, runs, int(after or 0))
        async for item in items:
            if item.name != "keepalive":
                await websocket.send_bytes(ws(item))
    except (WebSocketDisconnect, RuntimeError):
        return


# --- helpers ----------------------------------------------------------------------------------


def _sse_response(body: Any) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _run_answer(
    gateway: Gateway, request: Request, run_id: str, sequence: int, status: int
) -> Response:
    await gateway.caught_up(c.STREAM, sequence)
    async with session(gateway.engine) as db:
        row = await _run(db, run_id)
        data = row.public()
        if row.status == "queued":
            ahead = select(func.count()).where(
                col(RunRow.status) == "queued", col(RunRow.queued_seq) < row.queued_seq
            )
            data["position"] = (await db.exec(ahead)).one() + 1
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


async def _runs(db: AsyncSession, statuses: tuple[str, ...]) -> list[RunRow]:
    query = select(RunRow).where(col(RunRow.status).in_(statuses))
    return list((await db.exec(query.order_by(col(RunRow.queued_seq)))).all())


async def _run(db: AsyncSession, run_id: str) -> RunRow:
    row = await db.get(RunRow, run_id)
    if row is None:
        raise ApiError(common.NOT_FOUND, f"run {run_id} does not exist")
    return row


async def _detail(db: AsyncSession, run_id: str) -> dict[str, Any]:
    row = await _run(db, run_id)
    epochs = await db.exec(
        select(EpochRow).where(col(EpochRow.run_id) == run_id).order_by(col(EpochRow.epoch))
    )
    checkpoints = await db.exec(select(CheckpointRow).where(col(CheckpointRow.run_id) == run_id))
    return row.public() | {
        "history": [e.public() for e in epochs.all()],
        "checkpoints": [k.public() for k in checkpoints.all()],
    }


async def _experiment_runs(
    db: AsyncSession, experiment_id: str, project_id: str | None
) -> set[str]:
    query = select(RunRow.run_id).where(col(RunRow.experiment_id) == experiment_id)
    if project_id is not None:
        query = query.where(col(RunRow.project_id) == project_id)
    return set((await db.exec(query)).all())

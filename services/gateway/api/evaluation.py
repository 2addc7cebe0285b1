"""REST for evaluations: run one on a checkpoint, read its metrics, list a confusion cell."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common
from contracts import training as c
from contracts.datasets import LABEL_MAX
from services.gateway.access import require_of
from services.gateway.api.params import BodyId, PathId, QueryId
from services.gateway.api.runjobs import RunJob, start_run_job
from services.gateway.auth.deps import actor_of
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, found, ok
from services.gateway.gateway import DbDep, GatewayDep
from services.gateway.readmodels import training as read
from services.kernel.sqlite import session

router = APIRouter(prefix="/evaluation", tags=["evaluation"], responses=ERROR_RESPONSES)
#: Images listed for one confusion-matrix cell.
CELL_MAX = 1000
Label = Annotated[str, Query(max_length=LABEL_MAX)]


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: BodyId
    checkpoint: Literal["best", "last"] = "best"
    subset: Literal["train", "val", "test"] = "test"


@router.post("/run", status_code=202)
async def evaluate(body: EvaluationIn, request: Request, gateway: GatewayDep) -> Response:
    """Evaluate a run's checkpoint on a subset of its split, in the background."""

    def command(evaluation_id: str) -> c.EvaluateRun:
        return c.EvaluateRun(
            evaluation_id=evaluation_id,
            run_id=body.run_id,
            checkpoint=body.checkpoint,
            subset=body.subset,
            correlation_id=REQUEST_ID.get(),
            actor=actor_of(request),
        )

    return await start_run_job(EVALUATION, body.run_id, command, request, gateway)


@router.get("")
async def list_evaluations(db: DbDep, run_id: QueryId, request: Request) -> Response:
    """A run's evaluations, newest first."""
    await require_of(request, "run", run_id, "viewer", field="run_id")
    rows = await read.list_evaluations(db, run_id=run_id)
    return ok({"items": [r.public() for r in rows]})


@router.get("/{evaluation_id}")
async def get_evaluation(evaluation_id: PathId, gateway: GatewayDep, request: Request) -> Response:
    """Its state, and once completed: accuracy, per class, confusion matrix, ECE, errors."""
    await gateway.fresh(c.STREAM, c.evaluation_subject(evaluation_id))
    await require_of(request, "evaluation", evaluation_id, "viewer")
    async with session(gateway.engine) as db:
        return ok((await _evaluation(db, evaluation_id)).public())


@router.get("/{evaluation_id}/cell")
async def confusion_cell(
    evaluation_id: PathId,
    db: DbDep,
    request: Request,
    true: Label,
    predicted: Label,
    limit: Annotated[int, Query(ge=1, le=CELL_MAX)] = 200,
) -> Response:
    """The images of one confusion-matrix cell, most confident first, with thumbnail links."""
    await require_of(request, "evaluation", evaluation_id, "viewer")
    row = await _evaluation(db, evaluation_id)
    if (row.metrics or {}).get("task") == "detection":
        message = "a detector's evaluation has no confusion matrix: its worst images are listed"
        raise ApiError(common.VALIDATION_ERROR, message + " in its metrics", field="evaluation_id")
    if row.status != "completed" or row.predictions is None:
        raise ApiError(common.CONFLICT, f"evaluation {evaluation_id} is {row.status}")
    run = await read.get_run(db, run_id=row.run_id)
    classes = run.classes if run else []
    if true not in classes or predicted not in classes:
        raise ApiError(common.VALIDATION_ERROR, "unknown class", field="true")
    t, p = classes.index(true), classes.index(predicted)
    cell = sorted((x for x in row.predictions if x[1] == t and x[2] == p), key=lambda x: -x[3])[
        :limit
    ]
    project = run.project_id if run else ""
    return ok(
        {
            "true": true,
            "predicted": predicted,
            "items": [
                {
                    "image_id": image_id,
                    "confidence": confidence,
                    "thumbnail": f"/api/v1/datasets/{project}/thumbnail/{image_id}",
                }
                for image_id, _, _, confidence in cell
            ],
        }
    )


async def _evaluation(db: AsyncSession, evaluation_id: str) -> read.EvaluationRow:
    row = await read.get_evaluation(db, evaluation_id=evaluation_id)
    return found(row, f"evaluation {evaluation_id}")


EVALUATION = RunJob(
    c.EvaluationSubjects.EVALUATE_RUN, c.STREAM, _evaluation, "get_evaluation", "evaluation_id"
)

"""REST for splits: create a named, seeded, leak-free train/val/test split; list and read them;
delete one no run uses."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common, new_id
from contracts import datasets as c
from services.gateway.access import require, require_of
from services.gateway.api.idempotent import idempotent
from services.gateway.api.params import BodyId, PathId, QueryId
from services.gateway.auth.deps import actor_of
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, found, ok
from services.gateway.gateway import DbDep, GatewayDep, pending
from services.gateway.idempotency import derived_id
from services.gateway.readmodels import datasets as read
from services.gateway.readmodels.training.queries import runs_using_split
from services.kernel.sqlite import session

router = APIRouter(prefix="/splits", tags=["splits"], responses=ERROR_RESPONSES)


class Ratios(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: float = Field(ge=0, le=1)
    val: float = Field(ge=0, le=1)
    test: float = Field(0.0, ge=0, le=1)


class SplitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: BodyId
    name: str = Field(min_length=1, max_length=c.SPLIT_NAME_MAX)
    ratios: Ratios
    strategy: Literal["random", "stratified"] = "stratified"
    seed: int = Field(0, ge=0, le=2**63 - 1)


@router.post("", status_code=201)
async def create_split(body: SplitCreate, request: Request, gateway: GatewayDep) -> Response:
    """Split the dataset; the same dataset, ratios and seed give the same split anywhere."""
    await require(request, body.project_id, "editor", field="project_id")
    key = request.headers.get("idempotency-key")

    async def run() -> Response:
        split_id = derived_id(actor_of(request), key, "split") if key else new_id()
        command = c.CreateSplit(
            dataset_id=body.project_id,
            split_id=split_id,
            name=body.name,
            train=body.ratios.train,
            val=body.ratios.val,
            test=body.ratios.test,
            strategy=body.strategy,
            seed=body.seed,
            actor=actor_of(request),
            correlation_id=REQUEST_ID.get(),
        )
        location = str(request.url_for("get_split", split_id=split_id))
        try:
            accepted = await gateway.send(c.Subjects.CREATE_SPLIT, command, request)
            if not await gateway.caught_up(c.STREAM, accepted.sequence):
                # Made, not yet shown here: a 202 (which leaves the key free for a retry to read
                # it), never a 404 for the split just made.
                made = {"id": split_id, "project_id": body.project_id, "name": body.name}
                return pending(made, location=location)
        except ApiError as err:
            # A retry of a request whose first try was stored after its answer was lost (NATS
            # electing a leader for longer than the gateway waits): the key names its split.
            if key is None or err.code != common.CONFLICT or not await _made(gateway, command):
                raise
        async with session(gateway.engine) as db:
            data = await _split(db, split_id)
        return ok(data, status=201, headers={"Location": location})

    return await idempotent(request, gateway, actor_of(request), run)


@router.get("")
async def list_splits(db: DbDep, project_id: QueryId, request: Request) -> Response:
    """A project's splits, oldest first, with per-subset class counts."""
    await require(request, project_id, "viewer", field="project_id")
    return ok({"items": await read.list_splits(db, dataset_id=project_id)})


@router.get("/{split_id}")
async def get_split(split_id: PathId, db: DbDep, request: Request) -> Response:
    """One split; browse its images with ``/datasets/{project_id}/images?split_id=…&subset=…``."""
    await require_of(request, "split", split_id, "viewer")
    return ok(await _split(db, split_id))


@router.delete("/{split_id}", status_code=204)
async def delete_split(
    split_id: PathId, request: Request, db: DbDep, gateway: GatewayDep
) -> Response:
    """Delete a split no run uses; its name may then be given to a new split."""
    await require_of(request, "split", split_id, "editor")
    split = await _split(db, split_id)
    # A run keeps its split for its record and its evaluations: a used split stays.
    if runs := await runs_using_split(db, split_id=split_id):
        used = f"{runs} run{'s' if runs > 1 else ''}"
        raise ApiError(common.CONFLICT, f"split {split_id} is used by {used}; it cannot be deleted")
    command = c.DeleteSplit(
        dataset_id=split["project_id"],
        split_id=split_id,
        actor=actor_of(request),
        correlation_id=REQUEST_ID.get(),
    )
    accepted = await gateway.send(c.Subjects.DELETE_SPLIT, command, request)
    await gateway.caught_up(c.STREAM, accepted.sequence)
    return Response(status_code=204)


async def _made(gateway: Any, command: c.CreateSplit) -> bool:
    """Whether the split ``command`` would make is already stored (and now read)."""
    await gateway.fresh(c.STREAM, c.event_subject(command.dataset_id))
    async with session(gateway.engine) as db:
        return await read.split_detail(db, split_id=command.split_id) is not None


async def _split(db: AsyncSession, split_id: str) -> dict[str, Any]:
    return found(await read.split_detail(db, split_id=split_id), f"split {split_id}")

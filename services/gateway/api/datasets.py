"""REST for datasets: browsing (pages of images, the class histogram), images and their
labels, health. The imports (``api.imports``) and the dataset export (``api.dataset_export``)
share its prefix and are routers of their own, which the app includes before and after it."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts import common
from contracts import datasets as c
from services.gateway.access import require
from services.gateway.api.imagefiles import image_row, serve_image
from services.gateway.api.params import Limit, MaybeFilter, MaybeQueryId, PathId
from services.gateway.auth.deps import actor_of
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, GatewayDep, pending
from services.gateway.readmodels import datasets as read
from services.gateway.readmodels.datasets import lean
from services.kernel.sqlite import session

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=ERROR_RESPONSES)

#: A page cursor: a file name (a path in an archive, at most PATH_MAX) and an image id, JSON
#: in base64 (4/3 the size).
CURSOR_MAX = 6 * 1024


class Relabel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, max_length=c.LABEL_MAX)


@router.get("/{project_id}")
async def summary(project_id: PathId, db: DbDep, request: Request) -> Response:
    """Counts, the class histogram, image sizes, imports and splits of a project's dataset."""
    await require(request, project_id, "viewer")
    return ok(await read.dataset_summary(db, dataset_id=project_id))


@router.get("/{project_id}/images")
async def list_images(
    project_id: PathId,
    request: Request,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX)] = None,
    label: Annotated[str | None, Query(max_length=c.LABEL_MAX)] = None,
    q: MaybeFilter = None,
    split_id: MaybeQueryId = None,
    subset: Literal["train", "val", "test"] | None = None,
) -> Response:
    """A page of images by file name; filter by label, file name text, split and subset.
    Read through the lean path (``readmodels.datasets.lean``): a hot page."""
    await require(request, project_id, "viewer")
    if subset and not split_id:
        raise ApiError(common.VALIDATION_ERROR, "subset needs a split_id", field="subset")
    reader = request.app.state.reader
    page = lean.image_page(
        reader,
        dataset_id=project_id,
        limit=limit,
        after=_decode_cursor(cursor) if cursor else None,
        label=label,
        q=q,
        split_id=split_id,
        subset=subset,
    )
    last = page.items[-1] if page.more else None
    next_cursor = _encode_cursor(last["filename"], last["id"]) if last else None
    items = page.items
    if split_id:  # each image's subset of that split, for a page that shows it
        ids = [item["id"] for item in items]
        subsets = lean.subsets_seen(reader, split_id=split_id, image_ids=ids)
        items = [item | {"subset": subsets.get(item["id"])} for item in items]
    return ok({"items": items, "total": page.total, "next_cursor": next_cursor})


@router.get("/{project_id}/image/{image_id}", response_class=FileResponse)
async def image(
    project_id: PathId,
    image_id: PathId,
    db: DbDep,
    gateway: GatewayDep,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The image's original bytes."""
    return await serve_image(request, db, project_id, image_id, "image", if_none_match)


@router.get("/{project_id}/thumbnail/{image_id}", response_class=FileResponse)
async def thumbnail(
    project_id: PathId,
    image_id: PathId,
    db: DbDep,
    gateway: GatewayDep,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A JPEG of at most 256 pixels a side, EXIF orientation applied."""
    return await serve_image(request, db, project_id, image_id, "thumbnail", if_none_match)


@router.patch("/{project_id}/images/{image_id}")
async def relabel(
    project_id: PathId, image_id: PathId, body: Relabel, request: Request, gateway: GatewayDep
) -> Response:
    """Give an image another label."""
    await require(request, project_id, "editor")
    command = c.RelabelImage(
        dataset_id=project_id,
        image_id=image_id,
        label=body.label,
        actor=actor_of(request),
        correlation_id=REQUEST_ID.get(),
    )
    accepted = await gateway.send(c.Subjects.RELABEL_IMAGE, command, request)
    applied = await gateway.caught_up(c.STREAM, accepted.sequence)
    async with session(gateway.engine) as db:
        shown = (await image_row(db, project_id, image_id)).public()
    if not applied:  # stored, not yet shown here: the image with the label it now has
        return pending(shown | {"label": body.label})
    return ok(shown)


@router.delete("/{project_id}/images/{image_id}", status_code=204)
async def delete_image(
    project_id: PathId, image_id: PathId, request: Request, gateway: GatewayDep
) -> Response:
    """Remove an image from the dataset (its file stays for other datasets that hold it)."""
    await require(request, project_id, "editor")
    command = c.DeleteImage(
        dataset_id=project_id,
        image_id=image_id,
        actor=actor_of(request),
        correlation_id=REQUEST_ID.get(),
    )
    accepted = await gateway.send(c.Subjects.DELETE_IMAGE, command, request)
    await gateway.caught_up(c.STREAM, accepted.sequence)
    return Response(status_code=204)


@router.get("/{project_id}/health")
async def dataset_health(project_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """Duplicates, near-duplicates, corrupt files, imbalance, odd sizes, small classes."""
    await require(request, project_id, "viewer")
    query = c.GetHealth(dataset_id=project_id, correlation_id=REQUEST_ID.get())
    reply = await gateway.ask(c.Subjects.HEALTH, query, c.HealthReport, request, timeout=60.0)
    return ok(reply.report)


# --- helpers ----------------------------------------------------------------------------------


def _encode_cursor(filename: str, image_id: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([filename, image_id])).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        name, image_id = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
        return str(name), str(image_id)
    except Exception:
        raise ApiError(common.VALIDATION_ERROR, "invalid cursor", field="cursor") from None

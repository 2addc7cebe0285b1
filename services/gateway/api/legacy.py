"""The original documents' paths, served beside today's routes so that a client written against
those documents runs unchanged. Each path delegates to today's route; nothing is done twice.

- ``POST /api/datasets/import``: the background-task table's one import endpoint. JSON
  ``{"project_id", "source_path", "format"}`` imports a folder on the server (today's
  ``/datasets/import/local``); a multipart form (``file`` = a ZIP, ``project_id``, ``format``)
  or a raw ZIP body uploads (today's ``/datasets/import/upload``). 202 with the import job,
  its ``task_id`` and ``check_url``.
- ``GET /api/datasets/{project_id}/image/{filename}`` and ``/thumbnail/{filename}``: an image
  by its file name (its path inside its import, slashes and all) as well as by its id; a name
  that several images carry (from different imports) is a 409 listing their ids.
- ``GET /api/training/{run_id}/stream``: the run's SSE (``epoch_end`` ..., then ``complete``
  or ``error``, and the stream ends), as ``/training/runs/{run_id}/stream`` serves it.

``documents`` is included under ``/api/v1`` and ``/api`` like every router; ``by_name`` only
under ``/api`` (the documents' prefix) and before the alias routes whose path it shares: it
answers an image id exactly as they do, so nothing they served changes. Imports the routes it
delegates to, the access rules and the read models.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import common
from contracts import datasets as c
from services.gateway.access import require
from services.gateway.api import imports, training
from services.gateway.api.imagefiles import serve_image
from services.gateway.api.params import BodyId, PathId
from services.gateway.auth.deps import STREAM_ROUTE
from services.gateway.envelope import ERROR_RESPONSES, ApiError, error
from services.gateway.gateway import DbDep, GatewayDep
from services.gateway.readmodels import datasets as read
from services.gateway.readmodels.datasets.queries import images_named
from services.gateway.uploads import RAW_TYPES

documents = APIRouter(tags=["original documents"], responses=ERROR_RESPONSES)
by_name = APIRouter(tags=["original documents"], responses=ERROR_RESPONSES)
#: Ids listed in the 409 of a file name several images carry.
AMBIGUOUS_MAX = 50


class DocumentImport(BaseModel):
    """A folder on the server, as the original documents name its fields."""

    model_config = ConfigDict(extra="forbid")
    project_id: BodyId
    source_path: str = Field(min_length=1, max_length=common.PATH_MAX)
    format: imports.Format = "auto"


_UPLOAD_FORM = {
    "type": "object",
    "required": ["file", "project_id"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "project_id": {"type": "string"},
        "format": {"type": "string", "enum": ["auto", "folder", "csv", "coco", "yolo"]},
    },
}
_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DocumentImport.model_json_schema()},
            # A raw application/zip body is taken too (as today's upload route takes it).
            "multipart/form-data": {"schema": _UPLOAD_FORM},
        },
    }
}


@documents.post("/datasets/import", status_code=202, openapi_extra=_IMPORT_BODY)
async def import_dataset(request: Request, gateway: GatewayDep) -> Response:
    """Import a dataset: JSON (``project_id``, ``source_path``, ``format``) for a folder on
    the server, or a ZIP upload (multipart ``file`` with ``project_id`` and ``format``)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data" or kind.encode() in RAW_TYPES:
        # An upload: today's route reads (and refuses) the stream itself.
        project_id = request.query_params.get("project_id") or None
        if project_id is not None and not imports.check(project_id):
            raise ApiError(common.VALIDATION_ERROR, "project_id is malformed", field="project_id")
        fmt = request.query_params.get("format") or None
        if fmt is not None and fmt not in ("auto", "folder", "csv", "coco", "yolo"):
            raise ApiError(common.VALIDATION_ERROR, "unknown format", field="format")
        return await imports.import_upload(request, gateway, project_id, cast(Any, fmt))
    try:
        body = DocumentImport.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [dict(e) | {"loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None
    local = imports.LocalImport(
        project_id=body.project_id, path=body.source_path, format=body.format
    )
    return await imports.import_local(local, request, gateway)


@documents.get(
    "/training/{run_id}/stream", response_class=StreamingResponse, openapi_extra=STREAM_ROUTE
)
async def run_stream(run_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """SSE of a run as the documents' ``EventSource`` reads it: ``epoch_end`` per epoch, then
    ``complete`` (or ``error``) and the stream ends. Takes a stream token as
    ``?access_token=``; ``Last-Event-ID`` resumes."""
    return await training.run_stream(run_id, request, gateway)


@by_name.get("/datasets/{project_id}/image/{name:path}", include_in_schema=False)
async def image(
    project_id: PathId,
    name: str,
    db: DbDep,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The image's original bytes, by its id or its file name."""
    return await _serve(request, db, project_id, name, "image", if_none_match)


@by_name.get("/datasets/{project_id}/thumbnail/{name:path}", include_in_schema=False)
async def thumbnail(
    project_id: PathId,
    name: str,
    db: DbDep,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A JPEG of at most 256 pixels a side, by the image's id or its file name."""
    return await _serve(request, db, project_id, name, "thumbnail", if_none_match)


async def _serve(
    request: Request,
    db: Any,
    project_id: str,
    name: str,
    kind: c.BlobKind,
    if_none_match: str | None,
) -> Response:
    """An id is served as today's routes serve it; a file name is looked up first: one
    image is served, several are a 409 naming their ids, none a 404."""
    await require(request, project_id, "viewer")
    if imports.check(name) and await read.get_image(db, dataset_id=project_id, image_id=name):
        return await serve_image(request, db, project_id, name, kind, if_none_match)
    named = await images_named(db, dataset_id=project_id, filename=name, limit=AMBIGUOUS_MAX)
    if not named:
        raise ApiError(common.NOT_FOUND, f"image {name} is not in this dataset", field="filename")
    if len(named) > 1:
        ids = [row.image_id for row in named]
        message = (
            f"{len(ids)} images of this dataset are named {name} (from different imports); "
            "ask for one by its id"
        )
        return error(409, common.CONFLICT, message, "filename", ids=ids)
    return await serve_image(request, db, project_id, named[0].image_id, kind, if_none_match)

"""REST for exports: request a verified export, read its figures, download it, predict."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from contracts import common
from contracts import exports as x
from services.gateway.access import require, require_of
from services.gateway.api.params import BodyId, MaybeQueryId, PathId
from services.gateway.api.runjobs import RunJob, start_run_job
from services.gateway.auth.deps import actor_of
from services.gateway.blobs import send_export_file
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, found, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.readmodels import exports as read
from services.kernel.sqlite import session

router = APIRouter(prefix="/export", tags=["export"], responses=ERROR_RESPONSES)
#: Images sent to one prediction, in bytes (they travel to the exporter in one NATS message).
PREDICT_MAX_BYTES = 6 * 1024 * 1024
#: Form fields besides the images (none are read): more is a malformed request.
PREDICT_MAX_FIELDS = 16
MEDIA = {"onnx": "application/onnx", "torchscript": "application/octet-stream"}
ZIP = "application/zip"


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: BodyId
    checkpoint: Literal["best", "last"] = "best"
    format: str = Field("onnx", max_length=common.KEYWORD_MAX)


@router.post("/run", status_code=202)
async def request_export(body: ExportIn, request: Request, gateway: GatewayDep) -> Response:
    """Export a run's checkpoint; it is offered only once its parity check passes."""

    def command(export_id: str) -> x.RequestExport:
        return x.RequestExport(
            export_id=export_id,
            run_id=body.run_id,
            checkpoint=body.checkpoint,
            format=body.format,
            correlation_id=REQUEST_ID.get(),
            actor=actor_of(request),
        )

    return await start_run_job(EXPORT, body.run_id, command, request, gateway)


@router.get("")
async def list_exports(
    db: DbDep, request: Request, run_id: MaybeQueryId = None, project_id: MaybeQueryId = None
) -> Response:
    """A run's exports (``?run_id=``) or a project's (``?project_id=``), newest first."""
    if not run_id and not project_id:
        raise ApiError(common.VALIDATION_ERROR, "give run_id or project_id", field="run_id")
    if run_id:
        await require_of(request, "run", run_id, "viewer", field="run_id")
    if project_id:
        await require(request, project_id, "viewer", field="project_id")
    rows = await read.list_exports(db, run_id=run_id, project_id=project_id)
    return ok({"items": [r.public() for r in rows]})


@router.get("/{export_id}")
async def get_export(export_id: PathId, gateway: GatewayDep, request: Request) -> Response:
    """Its state; once done its size, sha256, parity and latency figures (or why it failed)."""
    await _fresh(gateway, export_id)
    await require_of(request, "export", export_id, "viewer")
    async with session(gateway.engine) as db:
        return ok((await _export(db, export_id)).public())


@router.get("/{export_id}/download", response_class=FileResponse)
async def download(export_id: PathId, db: DbDep, gateway: GatewayDep, request: Request) -> Response:
    """The model file, with its sha256 in ``X-Checksum-SHA256``; range requests work."""
    await require_of(request, "export", export_id, "viewer")
    row = await _ready(db, export_id)
    assert row.file_name and row.sha256
    name = f"{row.run_id}-{export_id}.{row.file_name.rsplit('.', 1)[-1]}"
    kept = x.export_object(export_id, row.file_name)
    return await send_export_file(request, export_id, kept, name, row.sha256, MEDIA.get(row.format))


@router.get("/{export_id}/bundle", response_class=FileResponse)
async def bundle(export_id: PathId, db: DbDep, gateway: GatewayDep, request: Request) -> Response:
    """A ZIP: the model, ``labels.txt`` and a model card (Markdown and JSON)."""
    await require_of(request, "export", export_id, "viewer")
    row = await _ready(db, export_id)
    assert row.bundle_sha256
    name, kept = f"{row.run_id}-{export_id}-bundle.zip", x.export_object(export_id, x.BUNDLE_NAME)
    return await send_export_file(request, export_id, kept, name, row.bundle_sha256, ZIP)


@router.post("/{export_id}/predict")
async def predict(
    export_id: PathId,
    request: Request,
    gateway: GatewayDep,
    top_k: Annotated[int, Query(ge=1, le=100)] = 5,
) -> Response:
    """For one or more images (multipart), from the exported model: a classifier's top-k
    labels and scores per image, or a detector's boxes per image (``{"boxes": [{"label",
    "score", "x", "y", "w", "h"}]}``, normalised to the image like a dataset's boxes, best
    first; ``top_k`` does not apply)."""
    await require_of(request, "export", export_id, "viewer")
    images = await _images(request)
    query = x.Predict(export_id=export_id, images=images, top_k=top_k)
    reply = await gateway.ask(x.Subjects.PREDICT, query, x.Predictions, request, timeout=60.0)
    return ok(predictions_body(reply))


def predictions_body(reply: x.Predictions) -> dict[str, object]:
    """The answer's body: ``task`` and, per image, a list of {label, score} (classifier) or
    an object with its boxes (detector)."""
    if reply.task == "detection":
        boxes = [{"boxes": [msgspec.to_builtins(b) for b in image]} for image in reply.boxes]
        return {"export_id": reply.export_id, "task": reply.task, "predictions": boxes}
    results = [[{"label": label, "score": score} for label, score in r] for r in reply.results]
    return {"export_id": reply.export_id, "task": reply.task, "predictions": results}


async def _images(request: Request) -> list[bytes]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > PREDICT_MAX_BYTES:
        raise ApiError("PAYLOAD_TOO_LARGE", "send at most 6 MB of images at once", status=413)
    try:
        form = await request.form(max_files=x.PREDICT_MAX_IMAGES, max_fields=PREDICT_MAX_FIELDS)
    except (HTTPException, MultiPartException) as exc:  # too many parts, or a malformed body
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        message = f"{detail} (send at most {x.PREDICT_MAX_IMAGES} images as multipart files)"
        raise ApiError(common.VALIDATION_ERROR, message, field="file") from None
    images = [await f.read() for _, f in form.multi_items() if isinstance(f, UploadFile)]
    if not images:
        raise ApiError(
            common.VALIDATION_ERROR, "send one or more images as multipart files", field="file"
        )
    if sum(len(i) for i in images) > PREDICT_MAX_BYTES:
        raise ApiError("PAYLOAD_TOO_LARGE", "send at most 6 MB of images at once", status=413)
    return images


async def _fresh(gateway: Gateway, export_id: str) -> None:
    await gateway.fresh(x.STREAM, x.event_subject(export_id))


async def _ready(db: AsyncSession, export_id: str) -> read.ExportRow:
    row = await _export(db, export_id)
    if row.status != "completed":
        why = f": {row.error['message']}" if row.error else ""
        raise ApiError(common.CONFLICT, f"export {export_id} is {row.status}{why}")
    return row


async def _export(db: AsyncSession, export_id: str) -> read.ExportRow:
    return found(await read.get_export(db, export_id=export_id), f"export {export_id}")


EXPORT = RunJob(x.Subjects.REQUEST_EXPORT, x.STREAM, _export, "get_export", "export_id")

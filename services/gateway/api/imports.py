"""REST for dataset imports (a server path, a ZIP upload) as jobs: start, read, cancel, follow.

Split from ``api.datasets`` (browsing, images, health), which includes this router first so
that ``/datasets/import/...`` is matched before ``/datasets/{project_id}/...``. Imports the
gateway's ports, its read model of datasets, and the upload hand-over.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts import common, new_id
from contracts import datasets as c
from services.gateway.access import require, require_of
from services.gateway.api.idempotent import idempotent, keyed_id
from services.gateway.api.params import BodyId, MaybeQueryId, PathId
from services.gateway.auth.deps import STREAM_ROUTE, actor_of
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, found, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep, pending
from services.gateway.handover import hand_over, withdraw
from services.gateway.readmodels import datasets as read
from services.gateway.readmodels.tasks import task_link
from services.gateway.stream_guard import guarded_sse, open_guard
from services.gateway.streams import KEEPALIVE_S, sse_response
from services.gateway.uploads import Sweeper, receive, sweep
from services.kernel.eventstore import check_id
from services.kernel.sqlite import session

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=ERROR_RESPONSES)

#: How long starting an import waits to answer a bad source with its 4xx rather than a 202.
VALIDATION_WAIT_S = 10.0
Format = Literal["auto", "folder", "csv", "coco", "yolo"]
SWEEPER = Sweeper()


class LocalImport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: BodyId
    path: str = Field(min_length=1, max_length=common.PATH_MAX)
    format: Format = "auto"


@router.post("/import/local", status_code=202)
async def import_local(body: LocalImport, request: Request, gateway: GatewayDep) -> Response:
    """Import from a folder on the server (only below the operator's allowed roots)."""
    await require(request, body.project_id, "editor", field="project_id")

    async def run() -> Response:
        return await _start(gateway, request, body.project_id, "local", body.path, body.format)

    again = partial(_existing_import, gateway, request)
    return await idempotent(request, gateway, actor_of(request), run, job=True, existing=again)


#: The slowest rate at which the datasets service is expected to fetch an uploaded archive from
#: the Object Store, which it does before it answers the import command.
FETCH_BYTES_PER_S = 5 * 1024 * 1024


@router.post("/import/upload", status_code=202)
async def import_upload(
    request: Request,
    gateway: GatewayDep,
    project_id: MaybeQueryId = None,
    format: Annotated[Format | None, Query()] = None,
) -> Response:
    """Import a ZIP: multipart field ``file`` (with ``project_id``, ``format``) or a raw body."""
    if project_id:  # known before the upload: a caller who may not import sends nothing
        await require(request, project_id, "editor", field="project_id")

    async def run() -> Response:
        return await _receive_and_start(request, gateway, project_id, format)

    # A retried upload with the same key gets the first import, not a second one.
    again = partial(_existing_import, gateway, request)
    return await idempotent(
        request, gateway, actor_of(request), run, job=True, streamed=True, existing=again
    )


async def _receive_and_start(
    request: Request, gateway: Gateway, project_id: str | None, format: str | None
) -> Response:
    uploads = gateway.settings.data_dir("uploads")
    if SWEEPER.due():  # what a crashed gateway left
        await asyncio.to_thread(sweep, uploads)
    upload_id = new_id()
    staged = uploads / f"{upload_id}.zip"
    upload = await receive(request, staged, gateway.settings.upload_max_bytes)
    handed: str | None = None
    try:
        pid = project_id or upload.fields.get("project_id") or ""
        fmt = format or upload.fields.get("format") or "auto"
        if not pid:
            raise ApiError(common.VALIDATION_ERROR, "project_id is required", field="project_id")
        if not check(pid):  # a form field: the query parameter's rule, checked by hand
            raise ApiError(common.VALIDATION_ERROR, "project_id is malformed", field="project_id")
        if fmt not in ("auto", "folder", "csv", "coco", "yolo"):
            raise ApiError(common.VALIDATION_ERROR, "unknown format", field="format")
        await require(request, pid, "editor", field="project_id")
        # The datasets service may run elsewhere: the archive goes to it through the Object
        # Store (streamed; the local copy deleted), and the command names the object.
        # It fetches the archive before it answers: the answer is waited for accordingly.
        wait = gateway.settings.request_timeout + staged.stat().st_size / FETCH_BYTES_PER_S
        handed = await hand_over(gateway.js, staged, upload_id)
        return await _start(gateway, request, pid, "upload", upload.filename, fmt, handed, wait)
    except BaseException:
        if handed is not None:  # taken already (then a no-op), or never will be
            await asyncio.shield(withdraw(gateway.js, handed))
        raise
    finally:
        staged.unlink(missing_ok=True)  # refused before the hand-over: nothing of it is kept


@router.get("/import/{import_id}")
async def get_import(
    import_id: PathId, db: DbDep, gateway: GatewayDep, request: Request
) -> Response:
    """An import job: its state, and its report once it is over."""
    await require_of(request, "import", import_id, "viewer")
    row = await _import(db, import_id)
    await gateway.fresh(c.STREAM, c.event_subject(row.dataset_id))
    row = await _import(db, import_id)  # as the read model shows it now
    data = row.public()
    latest = None if row.done else gateway.progress.get(import_id)
    data["progress"] = msgspec.json.decode(latest) if latest else None
    return ok(data)


@router.post("/import/{import_id}/cancel")
async def cancel_import(import_id: PathId, request: Request, db: DbDep, gw: GatewayDep) -> Response:
    """Stop a running import; nothing of it is kept."""
    await require_of(request, "import", import_id, "editor")
    row = await _import(db, import_id)
    command = c.CancelImport(
        dataset_id=row.dataset_id, import_id=import_id, actor=actor_of(request)
    )
    await gw.send(c.Subjects.CANCEL_IMPORT, command, request)
    final = await _wait_for_import(gw, import_id, lambda r: r.done, timeout=30.0)
    return ok(final.public())


@router.get(
    "/import/{import_id}/stream", response_class=StreamingResponse, openapi_extra=STREAM_ROUTE
)
async def stream_import(import_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """Server-Sent Events: ``status``, then ``progress`` a few times a second, then
    ``complete`` (with the report) or ``error``; ``closed`` if access ends first. Takes a
    stream token as ``?access_token=``."""
    guard = await open_guard(request, lambda: require_of(request, "import", import_id, "viewer"))
    return sse_response(guarded_sse(_import_events(gateway, import_id), guard))


async def _start(
    gateway: Gateway,
    request: Request,
    project_id: str,
    kind: str,
    source: str,
    fmt: str,
    upload_object: str | None = None,
    timeout: float | None = None,
) -> Response:
    import_id = keyed_id(request, "import")
    command = c.StartImport(
        message_id=keyed_id(request, "start_import"),
        dataset_id=project_id,
        import_id=import_id,
        source_kind=kind,
        source=source,
        format=fmt,
        upload_object=upload_object,
        actor=actor_of(request),
        correlation_id=REQUEST_ID.get(),
    )
    accepted = await gateway.ask(
        c.Subjects.START_IMPORT, command, common.CommandAccepted, request, timeout=timeout
    )
    if not await gateway.caught_up(c.STREAM, accepted.sequence):
        # Started (its ImportStarted is stored), not yet shown here: whether its source reads
        # is then for the job to say (GET it), as for any import's later failure.
        started = {"id": import_id, "project_id": project_id, "state": "running"}
        shown = started | {"source_kind": kind, "source": source, "format": fmt}
        location = str(request.url_for("get_import", import_id=import_id))
        return pending(shown | task_link(import_id), location=location)
    return await _import_answer(gateway, request, import_id)


async def _existing_import(gateway: Gateway, request: Request) -> Response | None:
    async with session(gateway.engine) as db:  # a retried start: the import its key names
        row = await read.get_import(db, import_id=keyed_id(request, "import"))
    return None if row is None else await _import_answer(gateway, request, row.import_id)


async def _import_answer(gateway: Gateway, request: Request, import_id: str) -> Response:
    row = await _wait_for_import(
        gateway, import_id, lambda r: r.state != "running", VALIDATION_WAIT_S
    )
    # A source that could not be read is the request's error; a failure once it was read (a
    # full disk, a cancel) is the job's, whether or not it came before this answer.
    if row.state == "failed" and row.error and row.files is None:
        err = row.error
        raise ApiError(err["code"], err["message"], field=err.get("field"), status=err["status"])
    location = str(request.url_for("get_import", import_id=import_id))
    return ok(row.public() | task_link(import_id), status=202, headers={"Location": location})


async def _wait_for_import(
    gateway: Gateway, import_id: str, done: Any, timeout: float
) -> read.ImportRow:
    deadline = time.monotonic() + timeout
    while True:
        position = gateway.runner.position(c.STREAM)
        async with session(gateway.engine) as db:
            row = await _import(db, import_id)
        left = deadline - time.monotonic()
        if done(row) or left <= 0:
            return row
        await gateway.runner.wait_for(c.STREAM, position + 1, left)


async def _import_events(gateway: Gateway, import_id: str) -> Any:
    """Live progress, and the job reread (in a short session) only when the read model has
    moved: hundreds of open streams cost no query while nothing happens."""
    sub = await gateway.broker.connection.subscribe(c.progress_subject(import_id))
    try:
        position = gateway.runner.position(c.STREAM)
        row = await _read_import(gateway, import_id)
        yield _sse("status", row.public())
        quiet = 0.0
        while not row.done:
            try:
                msg = await sub.next_msg(timeout=0.5)
                yield b"event: progress\ndata: " + msg.data + b"\n\n"
                quiet = 0.0
            except TimeoutError:  # nats' TimeoutError is one too
                quiet += 0.5
                if quiet >= KEEPALIVE_S:
                    yield b": keepalive\n\n"
                    quiet = 0.0
            if gateway.runner.position(c.STREAM) != position:
                position = gateway.runner.position(c.STREAM)
                row = await _read_import(gateway, import_id)
        yield _sse("complete" if row.state == "completed" else "error", row.public())
    finally:
        await sub.unsubscribe()


async def _read_import(gateway: Gateway, import_id: str) -> read.ImportRow:
    async with session(gateway.engine) as db:
        return await _import(db, import_id)


def _sse(name: str, data: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), msgspec.json.encode(data))


async def _import(db: Any, import_id: str) -> read.ImportRow:
    return found(await read.get_import(db, import_id=import_id), f"import {import_id}")


def check(an_id: str) -> bool:
    try:
        check_id(an_id)
    except ValueError:
        return False
    return True

"""REST for projects: list, get, create, update, archive, restore, and the event stream.

The hot paths (``GET /projects/{id}`` and every command's answer) read the project and the
caller's role through the lean ``Reader`` (``app.state.reader``): two primary-key SELECTs on
a plain ``sqlite3`` connection, no ORM session. The commands take the gateway from the app's
state inline: ``GatewayDep`` is a plain function, which FastAPI runs in its thread pool."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common, new_id
from contracts import projects as c
from contracts.common import CommandAccepted
from services.gateway.access import judge, missing, principal_of, require, visible_projects
from services.gateway.api.idempotent import idempotent
from services.gateway.api.params import Limit, Offset, PathId
from services.gateway.auth.deps import STREAM_ROUTE, CurrentUser, actor_of
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep, get_gateway
from services.gateway.idempotency import derived_id
from services.gateway.readmodels import members
from services.gateway.readmodels import projects as read
from services.gateway.stream_guard import guarded_sse, open_guard
from services.gateway.streams import events, last_event_id, sse_response
from services.kernel.sqlite import Reader

router = APIRouter(prefix="/projects", tags=["projects"], responses=ERROR_RESPONSES)


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=c.NAME_MAX)
    description: str = Field("", max_length=c.DESCRIPTION_MAX)
    task_type: Literal["classification", "detection"] = "classification"


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=c.NAME_MAX)
    description: str | None = Field(None, max_length=c.DESCRIPTION_MAX)

    @model_validator(mode="after")
    def _something(self) -> ProjectUpdate:
        if self.name is None and self.description is None:
            raise ValueError("give a name, a description or both")
        return self


@router.get("")
async def list_projects(
    db: DbDep,
    principal: CurrentUser,
    limit: Limit = 50,
    offset: Offset = 0,
    status: Literal["active", "archived", "all"] = "active",
    q: Annotated[str | None, Query(max_length=c.NAME_MAX)] = None,
    task_type: Literal["classification", "detection"] | None = None,
    sort: read.Sort = "-created_at",
) -> Response:
    """List the projects one is a member of (an admin: all), newest first, filtered by
    status, task type and name; each with the caller's ``role`` in it."""
    archived = None if status == "all" else status == "archived"
    page = await read.list_projects(
        db,
        q=q,
        limit=limit,
        offset=offset,
        archived=archived,
        task_type=task_type,
        sort=sort,
        among=visible_projects(principal),
    )
    roles = await _roles(db, principal, [r.id for r in page.items])
    items = [r.public() | {"role": roles.get(r.id, "viewer")} for r in page.items]
    return ok({"items": items, "total": page.total, "limit": limit, "offset": offset})


async def _roles(db: AsyncSession, principal: Principal, ids: list[str]) -> dict[str, str]:
    """The caller's role in each project (a site admin's: ``admin``), so that a client (the
    projects page) offers only what the caller may do."""
    if principal.is_admin:
        return dict.fromkeys(ids, "admin")
    return await members.roles_of(db, user_id=principal.user_id, project_ids=ids)


@router.post("", status_code=201)
async def create_project(body: ProjectCreate, request: Request) -> Response:
    """Create a project; send an ``Idempotency-Key`` to make retries safe."""
    gateway = get_gateway(request)
    key = request.headers.get("idempotency-key")

    async def run() -> Response:
        project_id = derived_id(actor_of(request), key, "project") if key else new_id()
        command = c.CreateProject(
            project_id=project_id,
            name=body.name,
            description=body.description,
            task_type=body.task_type,
            message_id=derived_id(actor_of(request), key, "create_project") if key else new_id(),
            correlation_id=REQUEST_ID.get(),
            actor=actor_of(request),
        )
        accepted = await gateway.send(c.Subjects.CREATE, command, request)
        return await _answer(gateway, request, accepted, status=201)

    async def existing() -> Response | None:  # a retry whose first try made the project
        made = CommandAccepted(
            aggregate_id=derived_id(actor_of(request), key or "", "project"), version=1, sequence=0
        )
        try:
            return await _answer(gateway, request, made, status=201)
        except ApiError as absent:
            if absent.code != common.NOT_FOUND:
                raise
            return None

    return await idempotent(request, gateway, actor_of(request), run, existing=existing)


@router.get("/{project_id}")
async def get_project(
    project_id: PathId,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One project; its ``ETag`` is its version, to send back as ``If-Match``."""
    principal = await principal_of(request)
    absent = missing("project", project_id)  # an unknown project and a non-member's: one 404
    data, role = _seen_by(request, principal, project_id, absent=absent)
    judge(principal, role, "viewer", absent=absent)
    etag = f'"{data["version"]}"'
    if if_none_match and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return ok(data, headers={"ETag": etag})


@router.patch("/{project_id}")
async def update_project(
    project_id: PathId,
    body: ProjectUpdate,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Rename and/or re-describe; with ``If-Match`` it applies only to that version."""
    gateway = get_gateway(request)
    await require(request, project_id, "editor")
    command = c.UpdateProject(
        project_id=project_id,
        name=body.name,
        description=body.description,
        expected_version=_version(if_match),
        correlation_id=REQUEST_ID.get(),
        actor=actor_of(request),
    )
    accepted = await gateway.send(c.Subjects.UPDATE, command, request)
    return await _answer(gateway, request, accepted)


@router.post("/{project_id}/archive")
async def archive_project(
    project_id: PathId,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Archive a project: hidden from the default list, read-only until restored."""
    gateway = get_gateway(request)
    command = c.ArchiveProject
    return await _owner_command(request, gateway, project_id, if_match, command, c.Subjects.ARCHIVE)


@router.post("/{project_id}/restore")
async def restore_project(
    project_id: PathId,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Bring an archived project back."""
    gateway = get_gateway(request)
    command = c.RestoreProject
    return await _owner_command(request, gateway, project_id, if_match, command, c.Subjects.RESTORE)


@router.get("/{project_id}/events", response_class=StreamingResponse, openapi_extra=STREAM_ROUTE)
async def project_events(project_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """Server-Sent Events: this project's events as they happen; resumes by ``Last-Event-ID``.
    Takes a stream token as ``?access_token=``; ends with ``closed`` when access ends."""
    after = last_event_id(request)
    guard = await open_guard(request, lambda: require(request, project_id, "viewer"))
    source = events(gateway.js, c.event_subject(project_id), after)
    return sse_response(guarded_sse(source, guard))


async def _owner_command(
    request: Request,
    gateway: Gateway,
    project_id: str,
    if_match: str | None,
    kind: type[c.ArchiveProject | c.RestoreProject],
    subject: str,
) -> Response:
    """Archive or restore (owners only), at ``If-Match``'s version; retries are idempotent."""
    await require(request, project_id, "owner")
    command = kind(
        project_id=project_id,
        expected_version=_version(if_match),
        correlation_id=REQUEST_ID.get(),
        actor=actor_of(request),
    )
    return await idempotent(
        request,
        gateway,
        actor_of(request),
        lambda: _run(gateway, request, subject, command),
    )


async def _run(gateway: Gateway, request: Request, subject: str, command: Any) -> Response:
    return await _answer(gateway, request, await gateway.send(subject, command, request))


async def _answer(
    gateway: Gateway, request: Request, accepted: CommandAccepted, status: int = 200
) -> Response:
    """Answer once the read model shows the command's result (read-your-writes)."""
    project_id = accepted.aggregate_id
    headers = {"ETag": f'"{accepted.version}"'}
    if status == 201:
        headers["Location"] = str(request.url_for("get_project", project_id=project_id))
    if not await gateway.caught_up(c.STREAM, accepted.sequence):
        # Stored, but the read model is behind: say so rather than show stale data.
        data = {"id": project_id, "version": accepted.version, "pending": True}
        return ok(data, status=202, headers=headers)
    principal = await principal_of(request)
    absent = ApiError(common.NOT_FOUND, f"project {project_id} does not exist")
    data, _ = _seen_by(request, principal, project_id, absent=absent)
    return ok(data, status, headers)


def _seen_by(
    request: Request, principal: Principal, project_id: str, *, absent: ApiError
) -> tuple[dict[str, Any], str | None]:
    """A project as ``principal`` sees it, with their ``role`` in it (a member's own, a site
    admin's ``admin``, anyone else's ``viewer``), and their membership's role (None: none);
    ``absent`` raised for an unknown id. Read through the lean path: the read model as
    committed now (read-your-writes)."""
    reader: Reader = request.app.state.reader
    data = read.project_public(reader, project_id=project_id)
    if data is None:
        raise absent
    if principal.is_admin:
        return data | {"role": "admin"}, None
    role = members.role_of(reader, project_id=project_id, user_id=principal.user_id)
    return data | {"role": role or "viewer"}, role


def _version(if_match: str | None) -> int | None:
    """``If-Match: "7"`` → 7; ``*`` or no header → any version."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    # ASCII digits only ("²" is a digit to str.isdigit), and no more than a sequence can be.
    if not (tag.isascii() and tag.isdigit() and len(tag) <= 18):
        raise ApiError(
            common.VALIDATION_ERROR,
            'If-Match must be a version as given in ETag, e.g. "7"',
            field="If-Match",
        )
    return int(tag)

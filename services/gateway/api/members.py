"""REST for a project's members: list them (any member), add one, change a role and remove
one (owners and site admins). The projects service refuses removing or demoting the last owner
(409 ``LAST_OWNER``) and a member added twice (409)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from contracts import common
from contracts import identity as i
from contracts import projects as c
from services.gateway.access import require
from services.gateway.api.params import PathId
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.readmodels import identity
from services.gateway.readmodels import members as read
from services.kernel.sqlite import session

router = APIRouter(prefix="/projects", tags=["members"], responses=ERROR_RESPONSES)

Role = Literal["owner", "editor", "viewer"]
UserIdPath = Annotated[str, Path(pattern=i.USERNAME_PATTERN, max_length=64)]


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(pattern=i.USERNAME_PATTERN, max_length=64)
    role: Role = "viewer"


class MemberChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


@router.get("/{project_id}/members")
async def list_members(project_id: PathId, request: Request, db: DbDep) -> Response:
    """The project's members and their roles, owners first."""
    await require(request, project_id, "viewer")
    rows = await read.list_members(db, project_id=project_id)
    return ok({"items": [r.public() for r in rows]})


@router.post("/{project_id}/members", status_code=201)
async def add_member(
    project_id: PathId, body: MemberAdd, request: Request, gateway: GatewayDep
) -> Response:
    """Give a user a role in the project (an unknown user is 404)."""
    principal = await require(request, project_id, "owner")
    async with session(gateway.engine) as db:
        if await identity.get_user(db, user_id=body.user_id) is None:
            raise ApiError(common.NOT_FOUND, f"user {body.user_id} does not exist", field="user_id")
    command = c.AddMember(
        project_id=project_id,
        user_id=body.user_id,
        role=body.role,
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    return await _send(gateway, request, c.Subjects.ADD_MEMBER, command, status=201)


@router.patch("/{project_id}/members/{user_id}")
async def change_member_role(
    project_id: PathId,
    user_id: UserIdPath,
    body: MemberChange,
    request: Request,
    gateway: GatewayDep,
) -> Response:
    """Give a member another role; the last owner cannot be demoted (409 ``LAST_OWNER``)."""
    principal = await require(request, project_id, "owner")
    command = c.ChangeMemberRole(
        project_id=project_id,
        user_id=user_id,
        role=body.role,
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    return await _send(gateway, request, c.Subjects.CHANGE_MEMBER_ROLE, command)


@router.delete("/{project_id}/members/{user_id}", status_code=204)
async def remove_member(
    project_id: PathId, user_id: UserIdPath, request: Request, gateway: GatewayDep
) -> Response:
    """Take a member out of the project; the last owner cannot go (409 ``LAST_OWNER``)."""
    principal = await require(request, project_id, "owner")
    command = c.RemoveMember(
        project_id=project_id,
        user_id=user_id,
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    accepted = await gateway.send(c.Subjects.REMOVE_MEMBER, command, request)
    await gateway.caught_up(c.STREAM, accepted.sequence)
    return Response(status_code=204)


async def _send(
    gateway: Gateway,
    request: Request,
    subject: str,
    command: c.AddMember | c.ChangeMemberRole,
    status: int = 200,
) -> Response:
    """Send, then answer the membership as the read model shows it (read-your-writes)."""
    accepted = await gateway.send(subject, command, request)
    project_id, user_id = command.project_id, command.user_id
    if not await gateway.caught_up(c.STREAM, accepted.sequence):
        pending = {"project_id": project_id, "user_id": user_id, "pending": True}
        return ok(pending, status=202)
    async with session(gateway.engine) as db:
        row = await read.get_member(db, project_id=project_id, user_id=user_id)
    if row is None:  # removed again in the meantime
        raise ApiError(common.NOT_FOUND, f"user {user_id} is not a member of this project")
    return ok(row.public(), status=status)

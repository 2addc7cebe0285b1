"""REST for users, site admins only: create, list, read, disable, enable, reset a password.

Imports fastapi, the gateway's ports, the identity contracts and read model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common
from contracts import identity as c
from services.gateway.api.params import Limit, Offset
from services.gateway.auth.deps import AdminUser
from services.gateway.auth.routes import send_settled
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, found, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.readmodels import identity as read
from services.kernel.sqlite import session

router = APIRouter(prefix="/users", tags=["users"], responses=ERROR_RESPONSES)

UserIdPath = Annotated[str, Path(pattern=c.USERNAME_PATTERN, max_length=64)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(pattern=c.USERNAME_PATTERN, max_length=64)
    password: str = Field(min_length=c.PASSWORD_MIN, max_length=c.PASSWORD_MAX)
    site_role: Literal["admin", "user"] = "user"
    tier: Literal["free", "basic", "premium"] = "free"


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_password: str = Field(min_length=c.PASSWORD_MIN, max_length=c.PASSWORD_MAX)


@router.post("", status_code=201)
async def create_user(
    body: UserCreate, admin: AdminUser, request: Request, gateway: GatewayDep
) -> Response:
    """Create a user who signs in with this password (the user id is the username)."""
    command = c.CreateUser(
        user_id=body.user_id,
        password=body.password,
        site_role=body.site_role,
        tier=body.tier,
        actor=admin.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    headers = {"Location": str(request.url_for("get_user", user_id=body.user_id))}
    subject = c.Subjects.CREATE_USER
    return await _run(gateway, request, subject, command, body.user_id, 201, headers)


@router.get("")
async def list_users(_: AdminUser, db: DbDep, limit: Limit = 50, offset: Offset = 0) -> Response:
    """Every user, in the order they were created."""
    page = await read.list_users(db, limit=limit, offset=offset)
    items = [r.public() for r in page.items]
    return ok({"items": items, "total": page.total, "limit": limit, "offset": offset})


@router.get("/{user_id}")
async def get_user(user_id: UserIdPath, _: AdminUser, db: DbDep) -> Response:
    """One user."""
    return ok((await _row(db, user_id)).public())


@router.post("/{user_id}/disable")
async def disable_user(
    user_id: UserIdPath, admin: AdminUser, request: Request, gateway: GatewayDep
) -> Response:
    """Refuse the user's sign-ins, tokens and API keys until enabled again."""
    if user_id == admin.user_id:
        raise ApiError(common.CONFLICT, "you cannot disable yourself")
    command = c.DisableUser(user_id=user_id, actor=admin.user_id, correlation_id=REQUEST_ID.get())
    return await _run(gateway, request, c.Subjects.DISABLE_USER, command, user_id)


@router.post("/{user_id}/enable")
async def enable_user(
    user_id: UserIdPath, admin: AdminUser, request: Request, gateway: GatewayDep
) -> Response:
    """Let a disabled user sign in again (their old sessions stay ended)."""
    command = c.EnableUser(user_id=user_id, actor=admin.user_id, correlation_id=REQUEST_ID.get())
    return await _run(gateway, request, c.Subjects.ENABLE_USER, command, user_id)


@router.post("/{user_id}/password")
async def reset_password(
    user_id: UserIdPath,
    body: PasswordReset,
    admin: AdminUser,
    request: Request,
    gateway: GatewayDep,
) -> Response:
    """Set a user's password; every session of theirs ends."""
    command = c.ChangePassword(
        user_id=user_id,
        new_password=body.new_password,
        actor=admin.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    return await _run(gateway, request, c.Subjects.CHANGE_PASSWORD, command, user_id)


async def _run(
    gateway: Gateway,
    request: Request,
    subject: str,
    command: c.Command,
    user_id: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Send the command; once the read model shows it, answer with the user."""
    await send_settled(gateway, request, subject, command)
    async with session(gateway.engine) as db:
        row = await _row(db, user_id)
    return ok(row.public(), status=status, headers=headers)


async def _row(db: AsyncSession, user_id: str) -> read.UserRow:
    return found(await read.get_user(db, user_id=user_id), f"user {user_id}")

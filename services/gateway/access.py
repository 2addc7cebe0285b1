"""Authorization: which project a resource id belongs to, and whether the caller's role in that
project allows what a route does.

The rules, in one place:
- a site admin may do everything;
- a member may read everything of a project as a ``viewer``, change its data as an ``editor``
  (import, relabel, split, train, evaluate, export, rename) and archive, restore and manage
  members as an ``owner``; each role includes those below it;
- anyone else is told that the resource does not exist, in exactly the words an unknown id
  gets: a 404 says nothing about whether another user's project, run or export exists;
- a member without the role gets 403 ``FORBIDDEN``: they may see the resource, so saying why
  leaks nothing.

An id this read model does not know is unknown to everyone, admins too: the same id gives
every caller the same answer. Imports the read models and the principal; no route.
"""

from __future__ import annotations

from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

from contracts import common
from services.gateway.auth.deps import current_principal
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ApiError
from services.gateway.readmodels import members, ownership, projects
from services.gateway.readmodels.ownership import Among, Kind
from services.kernel.sqlite import session

__all__ = [
    "FORBIDDEN",
    "Kind",
    "Role",
    "check",
    "credentials",
    "judge",
    "missing",
    "principal_of",
    "project_of",
    "require",
    "require_of",
    "viewable",
    "visible_projects",
]

Role = Literal["viewer", "editor", "owner"]
FORBIDDEN = "FORBIDDEN"
#: How a 404 names each kind of id, as the routes word an unknown one.
NOUN: dict[str, str] = {"dataset": "project"}


def missing(kind: str, an_id: str, field: str | None = None) -> ApiError:
    """The one answer for an id that names nothing the caller may see."""
    noun = NOUN.get(kind, kind)
    return ApiError(common.NOT_FOUND, f"{noun} {an_id} does not exist", field=field, status=404)


async def project_of(db: AsyncSession, kind: Kind, an_id: str) -> str | None:
    """The project ``an_id`` (a resource of ``kind``) belongs to; ``None`` when unknown."""
    return await ownership.project_of(db, kind, an_id)


async def check(
    db: AsyncSession, principal: Principal, project_id: str | None, need: Role, *, absent: ApiError
) -> None:
    """Let ``principal`` do what needs ``need`` in ``project_id``, or raise: ``absent`` (the
    404 of the id asked for) for an unknown project or a non-member, 403 for too low a role."""
    if project_id is None:
        raise absent
    if principal.is_admin:
        return
    member = await members.get_member(db, project_id=project_id, user_id=principal.user_id)
    judge(principal, member.role if member else None, need, absent=absent)


def judge(principal: Principal, role: str | None, need: Role, *, absent: ApiError) -> None:
    """``check``'s verdict on a known project where ``principal`` holds ``role`` (None: no
    member), for a route that read the role itself (a lean read)."""
    if principal.is_admin:
        return
    if role is None:
        raise absent
    if members.RANK.get(role, 0) < members.RANK[need]:
        raise ApiError(
            FORBIDDEN, f"this needs the {need} role in the project; you are a {role}", status=403
        )


async def require(
    request: HTTPConnection, project_id: str, need: Role, *, field: str | None = None
) -> Principal:
    """The caller, allowed ``need`` in ``project_id`` (a path or body id naming a project).
    Read through the lean path (``app.state.reader``): every project route asks it."""
    principal = await principal_of(request)
    reader = request.app.state.reader
    absent = missing("project", project_id, field)
    if not projects.exists(reader, project_id=project_id):
        raise absent
    role = (
        None
        if principal.is_admin
        else members.role_of(reader, project_id=project_id, user_id=principal.user_id)
    )
    judge(principal, role, need, absent=absent)
    return principal


async def require_of(
    request: HTTPConnection, kind: Kind, an_id: str, need: Role, *, field: str | None = None
) -> Principal:
    """The caller, allowed ``need`` in the project of ``an_id`` (a resource of ``kind``);
    an unknown id and one of a project the caller is no member of get the same 404."""
    principal = await principal_of(request)
    async with session(request.app.state.gateway.engine) as db:
        project_id = await project_of(db, kind, an_id)
        await check(db, principal, project_id, need, absent=missing(kind, an_id, field))
    return principal


async def principal_of(conn: HTTPConnection) -> Principal:
    """The caller, as the router's authentication found it (or authenticated now: a WebSocket
    route has no router dependency); 401 without a valid credential."""
    cached: Principal | None = getattr(conn.state, "principal", None)
    if cached is not None:
        return cached
    bearer, api_key = credentials(conn)
    return await current_principal(conn, bearer, api_key)


def credentials(conn: HTTPConnection) -> tuple[str | None, str | None]:
    """The bearer token and the API key a request or a WebSocket handshake carries."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return bearer, conn.headers.get("x-api-key") or None


async def viewable(db: AsyncSession, principal: Principal) -> set[str] | None:
    """The ids of the projects the caller may read; ``None`` for an admin (every project)."""
    if principal.is_admin:
        return None
    return await ownership.member_project_ids(db, user_id=principal.user_id)


def visible_projects(principal: Principal) -> Among | None:
    """The projects whose items a list may show the caller, as a subquery for ``IN``;
    ``None`` for an admin, who sees every project's."""
    return None if principal.is_admin else members.member_projects(principal.user_id)

"""``/`` and what every project page shares: the project, checked as the API checks it.

``project_page`` renders a page of one project (its tabs, name and role) after the same access
check the API's routes make: a project the caller is no member of is a 404 page, exactly as for
an id that does not exist. Page modules build on it. Imports the gateway's access rules, read
models and the session's page dependency.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from services.gateway.access import check, missing
from services.gateway.auth.deps import current_principal
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ApiError
from services.gateway.gateway import GatewayDep
from services.gateway.pages.session import HOME
from services.gateway.pages.templating import render
from services.gateway.readmodels import members
from services.gateway.readmodels import projects as read
from services.kernel.sqlite import session

router = APIRouter(include_in_schema=False)

#: The tabs of a project's pages: (path under the project, label).
TABS: Final = (
    ("dataset", "Dataset"),
    ("split", "Split"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("export", "Export"),
)


@router.get("/")
async def home(request: Request) -> Response:
    """The projects for someone signed in, else the sign-in page."""
    try:
        await current_principal(request, bearer=None, api_key=None)
    except (HTTPException, ApiError):
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME, status_code=303)


async def project_context(
    gateway: GatewayDep, principal: Principal, project_id: str
) -> dict[str, Any]:
    """The project (as the API shows it) and the caller's role in it; a 404 for a project the
    caller may not see, worded as for one that does not exist. The read model is brought up
    to what is stored first: the page's lists must show what its reader just watched happen."""
    await gateway.current()
    async with session(gateway.engine) as db:
        row = await read.get_project(db, project_id=project_id)
        absent = missing("project", project_id)
        await check(db, principal, row.id if row else None, "viewer", absent=absent)
        assert row is not None
        member = await members.get_member(db, project_id=project_id, user_id=principal.user_id)
    role = "admin" if principal.is_admin else (member.role if member else "viewer")
    return {"project": row.public(), "role": role, "tabs": TABS}


async def project_page(
    request: Request,
    gateway: GatewayDep,
    principal: Principal,
    project_id: str,
    template: str,
    tab: str,
    **values: Any,
) -> Response:
    """A page of one project: its tabs, with ``tab`` current."""
    shared = await project_context(gateway, principal, project_id)
    return render(request, template, tab=tab, **shared, **values)


def can(role: str, need: str) -> bool:
    """Whether ``role`` (or a site admin) may do what needs ``need``; the page hides the
    controls it may not use (the API refuses them anyway)."""
    if role == "admin":
        return True
    return members.RANK.get(role, 0) >= members.RANK.get(need, 99)

"""The projects page: the list (search, status, paging), a form for a new project, and in each row
rename, archive and restore for those whose role allows it.

Everything in the page is the projects API's own JSON drawn as fragments (``FRAGMENTS``): the
list, the answer to a create, and the row a rename, archive or restore answers (each carries the
project's new version, which the row's next change sends back as ``If-Match``, so a change made
meanwhile by someone else is refused rather than overwritten). ``static/js/projects.js`` opens
the inline editors and confirmations and reloads the list after a create. Imports the pages'
foundation and the projects contract's limits only.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from contracts import projects as c
from services.gateway.api.params import LIMIT_MAX, OFFSET_MAX
from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import render

router = APIRouter(include_in_schema=False)

ROW: Final = "fragments/projects/row.html"
#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/projects"): "fragments/projects/list.html",
    ("POST", "/api/projects"): "fragments/projects/created.html",
    ("PATCH", "/api/projects/{project_id}"): ROW,
    ("POST", "/api/projects/{project_id}/archive"): ROW,
    ("POST", "/api/projects/{project_id}/restore"): ROW,
}
#: Rows on one page of the list.
PAGE_SIZE: Final = 20
STATUSES: Final = ("active", "archived", "all")
TASK_TYPES: Final = (("classification", "Classification"), ("detection", "Detection"))


def list_url(q: str, status: str, limit: int, offset: int) -> str:
    """The API's list URL for these filters (what the page's list is loaded from)."""
    query = {"q": q, "status": status, "limit": limit, "offset": offset}
    return "/api/v1/projects?" + urlencode({k: v for k, v in query.items() if v not in ("", 0)})


@router.get("/projects")
async def projects_page(
    request: Request,
    principal: PageUser,
    q: Annotated[str, Query(max_length=c.NAME_MAX)] = "",
    status: str = "active",
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> Response:
    """The list as the address asks for it (``?q=&status=&offset=``), and the form for a new
    project; an unknown status shows the active projects rather than an error."""
    shown = status if status in STATUSES else "active"
    return render(
        request,
        "projects.html",
        q=q,
        list_status=shown,
        statuses=STATUSES,
        task_types=TASK_TYPES,
        limit=limit,
        name_max=c.NAME_MAX,
        description_max=c.DESCRIPTION_MAX,
        list_url=list_url(q, shown, limit, offset),
        page_size=PAGE_SIZE,
    )

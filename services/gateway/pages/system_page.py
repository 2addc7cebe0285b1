"""The system page: this machine's GPUs ("CPU only" without one), who holds each device lease,
the queue, the workspace's disk and the health of NATS, every service and the read model.

The figures are ``GET /api/v1/system``'s own JSON drawn as a fragment (``FRAGMENTS``), fetched
when the page opens and every few seconds after, so the page says exactly what the API says.
Imports the pages' foundation only.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import render

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/system"): "fragments/system/figures.html",
}
#: How often the page fetches the figures again.
REFRESH_S: Final = 5


@router.get("/system")
async def system_page(request: Request, principal: PageUser) -> Response:
    """The studio's machine and services, refreshed every few seconds."""
    return render(request, "system.html", refresh_s=REFRESH_S)

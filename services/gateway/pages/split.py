"""The split page: make a train/val/test split of the project's dataset and see, per subset, how
many images of each class it holds (a chart, and a table with the same numbers).

The lists and tables are the splits API's own JSON drawn as fragments (``FRAGMENTS``); the
chart reads the same JSON from ``static/js/split.js``. Imports the pages' foundation only.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.api.params import PathId
from services.gateway.gateway import GatewayDep
from services.gateway.pages.home import can, project_context
from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import render

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/splits"): "fragments/split/list.html",
    ("GET", "/api/splits/{split_id}"): "fragments/split/detail.html",
    ("POST", "/api/splits"): "fragments/split/created.html",
}
#: What the form starts with: the API's own defaults where it has them (strategy, seed).
DEFAULTS: Final = {"train": 0.7, "val": 0.15, "test": 0.15, "strategy": "stratified", "seed": 0}


@router.get("/projects/{project_id}/split")
async def split_page(
    request: Request, project_id: PathId, principal: PageUser, gateway: GatewayDep
) -> Response:
    """The project's splits, a form for a new one (editors), and the chosen split's counts."""
    shared = await project_context(gateway, principal, project_id)
    editor = can(shared["role"], "editor")
    return render(request, "split.html", tab="split", editor=editor, defaults=DEFAULTS, **shared)

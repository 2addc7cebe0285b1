"""The evaluation page: evaluate a completed run's checkpoint on a subset of its split, then read
its metrics, per-class scores, confusion matrix (each cell opens the images behind it), its most
confident mistakes and a reliability diagram of its calibration; earlier evaluations reopen.

The tables are the evaluation API's own JSON drawn as fragments (``FRAGMENTS``); the reliability
diagram and the run choices come from the same API in ``static/js/evaluation.js``. The API's
answers do not name the project; a page passes ``project_id`` along in the query (the API
ignores it) so that fragments can link the project's thumbnails. Imports the pages' foundation.
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
    ("POST", "/api/evaluation/run"): "fragments/evaluation/started.html",
    ("GET", "/api/evaluation"): "fragments/evaluation/list.html",
    ("GET", "/api/evaluation/{evaluation_id}"): "fragments/evaluation/result.html",
    ("GET", "/api/evaluation/{evaluation_id}/cell"): "fragments/evaluation/cell.html",
}


@router.get("/projects/{project_id}/evaluation")
async def evaluation_page(
    request: Request, project_id: PathId, principal: PageUser, gateway: GatewayDep
) -> Response:
    """Start an evaluation (editors), follow it, and read any evaluation of the project."""
    shared = await project_context(gateway, principal, project_id)
    editor = can(shared["role"], "editor")
    return render(request, "evaluation.html", tab="evaluation", editor=editor, **shared)

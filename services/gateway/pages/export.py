"""The export page: export a run, watch the export until its parity check is in, read its parity
and latency figures, download it with its sha256, and try a prediction by dropping an image.

The page itself lists only the runs that can be exported (from the training read model); every
figure it shows comes from the export API's own JSON, drawn by the fragments registered here:
the project's exports (``GET /api/export?project_id=``), one export (``GET /api/export/{id}``,
which polls itself while the export runs) and a new export (``POST /api/export/run``).
Predictions go from ``static/js/export.js`` to ``POST /api/export/{id}/predict``. Imports the
gateway's pages foundation and the training read model.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from contracts import exports as x
from services.gateway.api.exports import PREDICT_MAX_BYTES
from services.gateway.api.params import MaybeQueryId, PathId
from services.gateway.gateway import GatewayDep
from services.gateway.pages.home import can, project_context
from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import render
from services.gateway.readmodels import training as runs
from services.kernel.sqlite import session

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/export"): "fragments/export/list.html",
    ("GET", "/api/export/{export_id}"): "fragments/export/detail.html",
    ("POST", "/api/export/run"): "fragments/export/detail.html",
}
#: Runs with a checkpoint to export: finished, or stopped after at least one epoch.
EXPORTABLE: Final = ("completed", "stopped")
#: The most runs the page offers (newest first).
RUNS_SHOWN: Final = 200
#: Top classes a prediction shows.
TOP_K: Final = 5


async def exportable_runs(gateway: GatewayDep, project_id: str) -> list[dict[str, Any]]:
    """The project's runs that have a checkpoint to export, newest first."""
    async with session(gateway.engine) as db:
        found: list[dict[str, Any]] = []
        for status in EXPORTABLE:
            rows = await runs.list_runs(db, project_id=project_id, status=status, limit=RUNS_SHOWN)
            found += [r.public() for r in rows if r.status == "completed" or r.epochs_done]
    return sorted(found, key=lambda r: str(r.get("created_at") or ""), reverse=True)


@router.get("/projects/{project_id}/export")
async def export_page(
    request: Request,
    project_id: PathId,
    principal: PageUser,
    gateway: GatewayDep,
    run_id: MaybeQueryId = None,
    export_id: MaybeQueryId = None,
) -> Response:
    """Export a run of the project and try the exported model."""
    shared = await project_context(gateway, principal, project_id)  # the access check first
    return render(
        request,
        "export.html",
        tab="export",
        chosen_run=run_id,
        export_id=export_id,
        runs=await exportable_runs(gateway, project_id),
        formats=x.FORMATS,
        predict_max_bytes=PREDICT_MAX_BYTES,
        top_k=TOP_K,
        can=can,
        **shared,
    )

"""The dataset page (``/projects/{id}/dataset``) and the fragments of its import half.

The page holds two halves: importing (this module: a ZIP upload with its upload progress, a
server path, the import's live progress over its event stream and its report) and browsing
(``dataset_browse``). An import's panel is the fragment of ``GET /api/datasets/import/{id}``: the
same JSON a script gets, drawn as its state, its progress or its report. Starting an import from a
server path with htmx answers that panel at once (the ``POST``'s fragment), and so does a cancel.

The page lists the project's latest imports from the gateway's read model (the API offers them
only inside the dataset's summary), so an import still running when the page opens is picked up
by the page's script. Imports fastapi, the gateway's read model of datasets and the pages' own
modules.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.api.params import PathId
from services.gateway.gateway import GatewayDep
from services.gateway.pages.home import can, project_context
from services.gateway.pages.session import PageUser
from services.gateway.pages.templating import render
from services.gateway.readmodels.datasets import queries
from services.kernel.sqlite import session

router = APIRouter(include_in_schema=False)

JOB: Final = "fragments/dataset/import_job.html"
#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/datasets/import/{import_id}"): JOB,
    ("POST", "/api/datasets/import/local"): JOB,
    ("POST", "/api/datasets/import/{import_id}/cancel"): JOB,
}
#: The formats an import may name, as the API accepts them (``auto`` detects).
FORMATS: Final = (
    ("auto", "Detect it"),
    ("folder", "Folders of classes"),
    ("csv", "CSV of file, label"),
    ("coco", "COCO JSON"),
    ("yolo", "YOLO"),
)
#: How many of the project's latest imports the page lists.
RECENT: Final = 8


async def recent_imports(gateway: GatewayDep, project_id: str) -> list[dict[str, Any]]:
    """The project's latest imports, newest first, as the API shows them."""
    async with session(gateway.engine) as db:
        rows = await queries.recent_imports(db, dataset_id=project_id, limit=RECENT)
    return [row.public() for row in rows]


def running(imports: list[dict[str, Any]]) -> str:
    """The id of the newest import still running, or ``""``."""
    live = [i for i in imports if i["state"] not in ("completed", "failed", "cancelled")]
    return str(live[0]["id"]) if live else ""


@router.get("/projects/{project_id}/dataset")
async def dataset_page(
    request: Request, project_id: PathId, principal: PageUser, gateway: GatewayDep
) -> Response:
    """Import images into the project's dataset, and browse them."""
    shared = await project_context(gateway, principal, project_id)
    imports = await recent_imports(gateway, project_id)
    return render(
        request,
        "dataset.html",
        tab="dataset",
        **shared,
        can_edit=can(shared["role"], "editor"),
        formats=FORMATS,
        imports=imports,
        running_import=running(imports),
    )


@router.get("/projects/{project_id}/dataset/imports")
async def imports_list(
    request: Request, project_id: PathId, principal: PageUser, gateway: GatewayDep
) -> Response:
    """The list of the project's latest imports (the page reloads it when one ends)."""
    await project_context(gateway, principal, project_id)
    imports = await recent_imports(gateway, project_id)
    return render(request, "fragments/dataset/import_list.html", imports=imports)

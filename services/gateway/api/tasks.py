"""REST for the one task view: every background job (an import, a training run, an evaluation,
an export) as one resource, as the original production API's ``/tasks/{id}`` had it. The rows
are the ``tasks`` read model (``services.gateway.readmodels.tasks``, where the statuses are
mapped); every 202 answer of the gateway names its task (``task_id``, ``check_url``).

A caller sees the tasks of the projects it may read (an admin: all); any other task id is
answered exactly as an unknown one. Imports the gateway's ports, the access rules and the read
model; no other route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from contracts.experiments import experiment_subject
from services.gateway import access
from services.gateway.api.params import Limit, MaybeQueryId, Offset, PathId
from services.gateway.auth.deps import CurrentUser
from services.gateway.envelope import ERROR_RESPONSES, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.readmodels import tasks as read
from services.kernel.sqlite import session

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=ERROR_RESPONSES)

KindFilter = Annotated[
    read.Kind | None, Query(description="import, training, evaluation, export, experiment")
]
StatusFilter = Annotated[
    read.Status | None, Query(description="pending, processing, completed, failed, cancelled")
]


@router.get("")
async def list_tasks(
    db: DbDep,
    request: Request,
    principal: CurrentUser,
    kind: KindFilter = None,
    status: StatusFilter = None,
    project_id: MaybeQueryId = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Background jobs, newest first, of the projects one may read; filter by kind, status
    and project."""
    if project_id:
        await access.require(request, project_id, "viewer", field="project_id")
    page = await read.list_tasks(
        db,
        kind=kind,
        status=status,
        project_id=project_id,
        among=access.visible_projects(principal),
        limit=limit,
        offset=offset,
    )
    items = [row.public(project) for row, project in page.items]
    return ok({"items": items, "total": page.total, "limit": limit, "offset": offset})


@router.get("/{task_id}")
async def get_task(task_id: PathId, request: Request, gateway: GatewayDep) -> Response:
    """One job: its kind, status, progress, times, and its result or error."""
    async with session(gateway.engine) as db:
        found = await read.get_task(db, task_id=task_id)
    if found is not None:  # as the read model shows its job's latest event
        await _fresh(gateway, found[0])
    principal = await access.principal_of(request)
    async with session(gateway.engine) as db:
        found = await read.get_task(db, task_id=task_id)
        project_id = found[1] if found else None
        await access.check(
            db, principal, project_id, "viewer", absent=access.missing("task", task_id)
        )
    assert found is not None  # check() refused a task without a project
    return ok(found[0].public(project_id))


async def _fresh(gateway: Gateway, row: read.TaskRow) -> None:
    """Let the read model apply what the task's job has recorded by now (bounded wait)."""
    match row.kind:
        case "import" if row.project_id:
            await gateway.fresh(d.STREAM, d.event_subject(row.project_id))
        case "training":
            await gateway.fresh(t.STREAM, t.event_subject(row.task_id))
        case "evaluation":
            await gateway.fresh(t.STREAM, t.evaluation_subject(row.task_id))
        case "export":
            await gateway.fresh(x.STREAM, x.event_subject(row.task_id))
        case "experiment":
            await gateway.fresh(t.STREAM, experiment_subject(row.task_id))

"""Start a background job on a training run (an evaluation, an export): one route shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import Response
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import Message, common
from contracts import training as t
from services.gateway.access import require_of
from services.gateway.api.idempotent import idempotent, keyed_id
from services.gateway.auth.deps import actor_of
from services.gateway.envelope import ApiError, ok
from services.gateway.gateway import Gateway, pending
from services.gateway.readmodels.tasks import task_link
from services.kernel.sqlite import session


class JobRow(Protocol):
    def public(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunJob:
    """Where one kind of job goes and is read back from.

    ``subject``: its command; ``stream``: where its events land; ``load``: its read-model row
    by id (raising a not-found ``ApiError``); ``route`` and ``id_param``: the route that reads it.
    """

    subject: str
    stream: str
    load: Callable[[AsyncSession, str], Awaitable[JobRow]]
    route: str
    id_param: str


async def start_run_job(
    job: RunJob, run_id: str, command: Callable[[str], Message], request: Request, gateway: Gateway
) -> Response:
    """Check the caller edits the run, send ``command(new job id)``, and answer 202 with the
    job as the read model shows it once the command's events are applied, and its Location."""
    await gateway.fresh(t.STREAM, t.event_subject(run_id))
    await require_of(request, "run", run_id, "editor", field="run_id")
    # A retry with the same Idempotency-Key names the same job: it never runs twice.
    job_id = keyed_id(request, job.route)

    async def run() -> Response:
        accepted = await gateway.send(job.subject, command(job_id), request)
        if not await gateway.caught_up(job.stream, accepted.sequence):
            # Started, not yet shown here: the job as its command says, never a 404.
            location = str(request.url_for(job.route, **{job.id_param: job_id}))
            started = {"id": job_id, "run_id": run_id, "status": "running"}
            return pending(started | task_link(job_id), location=location)
        return await answer()

    async def answer() -> Response:
        async with session(gateway.engine) as db:
            row = await job.load(db, job_id)
        location = str(request.url_for(job.route, **{job.id_param: job_id}))
        return ok(row.public() | task_link(job_id), status=202, headers={"Location": location})

    async def existing() -> Response | None:  # a retry's, whose first try started the job
        try:
            return await answer()
        except ApiError as missing:
            if missing.code != common.NOT_FOUND:
                raise
            return None

    return await idempotent(request, gateway, actor_of(request), run, job=True, existing=existing)

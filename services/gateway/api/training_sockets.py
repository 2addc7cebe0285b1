"""The training WebSocket: an experiment's runs (and, for a search, its trials and front) as
``{"type", "payload"}`` text frames, and what the experiment's SSE route and the hub share with
it (its runs, its feed, who may read them).

Every socket authenticates (a header, or a stream token as ``?access_token=``) and reads only
experiments of projects its caller is a member of; it is closed (4401) once its credential
ends, or (4404) once its caller loses the project. Imports the gateway's ports, the access
rules and the read models; no other route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from contracts import common
from contracts import training as c
from services.gateway import access
from services.gateway.envelope import ApiError
from services.gateway.gateway import FRESH_WAIT_S, Gateway
from services.gateway.readmodels import experiments as searches
from services.gateway.readmodels import training as read
from services.gateway.stream_guard import CLOSE_UNAUTHENTICATED, Guard, guarded, open_guard
from services.gateway.training_streams import Ending, Item, Search, ending_of, experiment_feed, ws
from services.kernel.eventstore import check_id
from services.kernel.sqlite import session

router = APIRouter(tags=["training"])


@router.websocket("/ws/experiments/{experiment_id}")
async def experiment_socket(websocket: WebSocket, experiment_id: str) -> None:
    """Text frames ``{"type", "payload"}``: first a ``snapshot`` (the experiment's runs, their
    status and latest metrics; for a search, also the experiment and its trials), then what its
    SSE gives after ``?last_event_id=`` (all of it by default); closed once every run is over,
    or a search once it is (its ``complete``). An unknown experiment (or one of a project one
    is no member of) gets an ``error`` and a close 4404; without a valid credential (a header,
    or a stream token as ``?access_token=``), or once it ends, ``error`` and a close 4401.
    """
    gateway: Gateway = websocket.app.state.gateway
    await websocket.accept()
    try:
        await access.principal_of(websocket)  # before anything else is said
        after = _after(websocket.query_params.get("last_event_id"))
        rows = await experiment_rows(gateway, experiment_id, None)
        guard = await open_guard(websocket, lambda: view_experiment(websocket, experiment_id, rows))
        snapshot = await _snapshot(gateway, experiment_id, rows)
        _, items = await experiment_items(gateway, experiment_id, rows, after)
    except (ApiError, HTTPException) as exc:
        await _refuse(websocket, exc)
        return
    await websocket.send_text(ws(Item("snapshot", snapshot)))
    await _pump(websocket, guarded(items, guard), guard)


# --- helpers ----------------------------------------------------------------------------------


async def experiment_rows(
    gateway: Gateway, experiment_id: str, project_id: str | None
) -> list[read.RunRow]:
    """The experiment's runs as the read model shows the stream now; an experiment is known
    when it was created as a search (of that project, if given) or a run carries its id (so a
    malformed or unused id is NOT_FOUND). A search's trials may not have started yet."""
    if not _valid(experiment_id) or (project_id is not None and not _valid(project_id)):
        raise ApiError(common.NOT_FOUND, f"experiment {experiment_id} does not exist")
    info = await gateway.js.stream_info(c.STREAM)
    await gateway.runner.wait_for(c.STREAM, info.state.last_seq, FRESH_WAIT_S)
    async with session(gateway.engine) as db:
        rows = await read.experiment_runs(db, experiment_id=experiment_id, project_id=project_id)
        search = await searches.get_experiment(db, experiment_id=experiment_id)
    if search is not None and project_id not in (None, search.project_id):
        search = None
    if not rows and search is None:
        raise ApiError(common.NOT_FOUND, f"experiment {experiment_id} does not exist")
    return rows


async def experiment_items(
    gateway: Gateway, experiment_id: str, rows: list[read.RunRow], after: int
) -> tuple[Ending, AsyncIterator[Item]]:
    """The feed of the experiment whose runs are ``rows`` (``experiment_rows``) for a client
    that has seen ``after``, and its ``Ending`` (over already: the client has its end)."""
    async with session(gateway.engine) as db:
        search = await _search(db, experiment_id)
    ending, start = await ending_of(gateway.js, rows, after, experiment_id, search)
    runs = {r.run_id for r in rows}
    return ending, experiment_feed(gateway.broker.connection, experiment_id, runs, start, ending)


async def _search(db: Any, experiment_id: str) -> Search | None:
    row = await searches.get_experiment(db, experiment_id=experiment_id)
    if row is None:
        return None  # a run's own experiment: it ends with its runs
    trials = await searches.trial_runs(db, experiment_id=experiment_id)
    return Search(row.created_seq, row.opened_seq, row.completed_seq, trials)


async def _snapshot(
    gateway: Gateway, experiment_id: str, rows: list[read.RunRow]
) -> dict[str, Any]:
    """The experiment now: each run with its status and its latest epoch's metrics; for a
    search, the experiment (its status, front, best trials) and its trials too."""
    position = gateway.runner.position(c.STREAM)
    async with session(gateway.engine) as db:
        latest = await read.latest_epochs(db, run_ids=[r.run_id for r in rows])
        detail = await searches.experiment_detail(db, experiment_id=experiment_id)
    runs = [
        r.public() | {"latest": latest[r.run_id].public() if r.run_id in latest else None}
        for r in rows
    ]
    snapshot = {"experiment_id": experiment_id, "runs": runs, "sequence": position}
    if detail is not None:
        snapshot |= {"trials": detail.pop("trials"), "experiment": detail}
    return snapshot


async def _refuse(websocket: WebSocket, exc: ApiError | HTTPException) -> None:
    """An ``error`` frame, then a close 4000 + the status (4401: no valid credential)."""
    if isinstance(exc, HTTPException):
        status, payload = exc.status_code, {"code": "UNAUTHENTICATED", "message": str(exc.detail)}
    else:
        status = exc.status
        payload = {"code": exc.code, "message": exc.message}
        payload |= {"field": exc.field} if exc.field else {}
    await websocket.send_text(ws(Item("error", payload)))
    code = CLOSE_UNAUTHENTICATED if status == 401 else 4000 + status
    await websocket.close(code=code, reason=payload["code"])


async def view_experiment(
    conn: HTTPConnection, experiment_id: str, rows: list[read.RunRow]
) -> None:
    """The caller may read the search's project and every project the experiment's runs are
    in; else the experiment does not exist, as for an unknown id."""
    principal = await access.principal_of(conn)
    absent = access.missing("experiment", experiment_id)
    async with session(conn.app.state.gateway.engine) as db:
        search = await searches.get_experiment(db, experiment_id=experiment_id)
        projects = {r.project_id for r in rows} | ({search.project_id} if search else set())
        if not projects:
            raise absent
        for project_id in sorted(projects):
            await access.check(db, principal, project_id, "viewer", absent=absent)


def _after(raw: str | None) -> int:
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ApiError(
            common.VALIDATION_ERROR,
            "last_event_id must be a stream sequence number",
            field="last_event_id",
        )
    return int(raw or 0)


async def _pump(websocket: WebSocket, items: AsyncIterator[Item], guard: Guard) -> None:
    """Send ``items`` until the feed ends (then close) or the client goes (then stop at once,
    not at the next event: a gone client must not keep its subscriptions). A feed that ends
    because the caller lost access closes with an ``error`` frame saying why, code 4401 for
    a credential that ended, 4000 + the HTTP status for the rest."""

    async def send() -> None:
        async for item in items:
            if item.name != "keepalive":
                await websocket.send_text(ws(item))
        if guard.ended is None:
            await websocket.close(code=1000)
            return
        ended = guard.ended
        await websocket.send_text(ws(Item("error", {"code": ended.code, "message": ended.message})))
        await websocket.close(code=4000 + ended.status, reason=ended.code)

    async def gone() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(send()), asyncio.create_task(gone())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task


def _valid(an_id: str) -> bool:
    try:
        check_id(an_id)
    except ValueError:
        return False
    return True

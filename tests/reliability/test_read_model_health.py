"""A read model that cannot update is reported: by the projection runner, and by ``/health``
(503, not 200 with everything fine) until it updates again.

The gateway's check runs on the studio shared by the modules of the projects service: it only
locks the read model for a moment (no process is stopped), and names its project uniquely."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import Table
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.projection import Decodes, ProjectionRunner
from services.kernel.sqlite import create_engine
from services.kernel.streams import StreamSpec, ensure_stream
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)


class Hangs(Decodes):
    """A projector whose apply waits for ``release``: a stuck projection."""

    name = "hangs"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = ()
    event_type = c.Event

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        await self.release.wait()


async def until(condition: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
    return value


async def test_the_runner_reports_a_stuck_projector_until_it_moves_again(nc: NATS, tmp_path: Path):
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    store = EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
    engine = create_engine(tmp_path / "model.db")
    projector = Hangs()
    runner = ProjectionRunner(nc, engine, [projector], consumer_prefix="test", stall_after=3.0)
    await runner.start()
    try:
        # given an idle runner: healthy, though nothing happens
        await asyncio.sleep(0)
        assert runner.health()["hangs"] == {"stream": c.STREAM, "ok": True, "error": None}
        # when an event arrives whose application hangs
        last = await store.append("p1", [c.ProjectCreated(project_id="p1", name="n")], 0)
        report = await until(lambda: (h := runner.health()["hangs"])["error"] and h)
        # then it is reported stuck, and healthy again once it has moved on
        assert report["ok"] is False and report["error"].startswith("stuck")
        projector.release.set()
        assert await runner.wait_for(c.STREAM, last, 10)
        await until(lambda: runner.health()["hangs"]["ok"])
        await runner.stop()
        assert runner.health()["hangs"]["error"] == "not running"
    finally:
        projector.release.set()
        await runner.stop()
        await engine.dispose()


async def test_health_answers_503_while_the_read_model_cannot_update(stack: Stack):
    name = f"blocked {uuid.uuid4().hex[:8]}"
    async with stack.client(timeout=30) as api:
        assert (await api.get("/health")).status_code == 200
        # given the gateway's read model locked by another writer
        locker = sqlite3.connect(stack.workspace / "gateway" / "readmodel.db", timeout=10)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            # when an event arrives that its projection must apply
            created = await api.post("/api/v1/projects", json={"name": name})
            assert created.status_code in (201, 202), created.text

            async def unhealthy() -> httpx.Response | None:
                resp = await api.get("/health")
                return resp if resp.status_code == 503 else None

            resp = await until_async(unhealthy)
            # then /health says the read model cannot update, and why
            body = resp.json()
            assert "read model" in body["error"]["message"]
            projects = body["data"]["read_model"][c.STREAM]
            assert projects["ok"] is False and "locked" in projects["error"]
        finally:
            locker.rollback()
            locker.close()

        # and once it can, it catches up and /health is 200 again
        async def healthy() -> bool:
            return (await api.get("/health")).status_code == 200

        await until_async(healthy)
        listed = (await api.get("/api/v1/projects", params={"q": name})).json()["data"]["items"]
        assert [(p["id"], p["name"]) for p in listed] == [(created.json()["data"]["id"], name)]


async def until_async(condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.2)
    return value

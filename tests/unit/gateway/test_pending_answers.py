"""A command accepted while the gateway's read model lags is answered honestly: 202 with
``pending: true``, the new thing's id, where to read it (``Location``) and when (``Retry-After``);
never a 404 for what was just made, nor stale data shown as the result.

In process: the real routers on an empty read-model file, the gateway's ports faked so that
every command is accepted and the read model never catches up (``caught_up`` False: a
projection held back past ``read_your_writes_timeout``). Access checks are let through; they
have tests of their own. Imports: the gateway's routers, envelope and read-model tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from contracts.common import CommandAccepted
from services.gateway import envelope
from services.gateway.api import datasets, evaluation, exports, imports, runjobs, splits, training
from services.gateway.auth.principal import Principal
from services.gateway.readmodels.datasets.tables import ImageRow
from services.gateway.readmodels.training.tables import RunRow
from services.kernel.sqlite import create_engine, session
from studio_client import models

API = "/api/v1"
PROJECT, RUN, IMAGE = "p" * 32, "r" * 32, "i" * 32
ADMIN = Principal(
    user_id="ann", site_role="admin", tier="premium", via="token", session_id=None, expires_at=None
)


class HeldBack:
    """The gateway's ports with its read model held back: each command is accepted (at a
    sequence the read model never reaches) and recorded."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sent: list[Any] = []

    async def send(self, subject: str, command: Any, request: Request) -> CommandAccepted:
        self.sent.append(command)
        return CommandAccepted(aggregate_id=_aggregate(command), version=1, sequence=99)

    async def ask(self, subject: str, command: Any, *_: Any, **__: Any) -> CommandAccepted:
        return await self.send(subject, command, None)  # type: ignore[arg-type]

    async def caught_up(self, stream: str, sequence: int) -> bool:
        return False

    async def fresh(self, stream: str, subject: str) -> None:
        return None


def _aggregate(command: Any) -> str:
    for name in ("run_id", "import_id", "split_id", "image_id"):
        if hasattr(command, name):
            return str(getattr(command, name))
    return "?"


async def _allowed(*_: Any, **__: Any) -> Principal:
    return ADMIN


@pytest.fixture
async def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    for module in (imports, datasets, splits, training):
        monkeypatch.setattr(module, "require", _allowed)
    for module in (imports, runjobs, training):
        monkeypatch.setattr(module, "require_of", _allowed, raising=False)
    engine = create_engine(tmp_path / "readmodel.db")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    gateway = HeldBack(engine)
    app = FastAPI()
    app.state.gateway = gateway
    envelope.install(app)

    @app.middleware("http")
    async def signed_in(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        request.state.principal = ADMIN
        return await call_next(request)

    for router in (
        imports.router,
        datasets.router,
        splits.router,
        training.router,
        evaluation.router,
    ):
        app.include_router(router, prefix=API)
    app.include_router(exports.router, prefix=API)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
        yield client, gateway
    await engine.dispose()


def pending(resp: httpx.Response, location: str | None) -> dict[str, Any]:
    """The answer is a pending 202 that says where and when to read; its data."""
    assert resp.status_code == 202, resp.text
    assert resp.headers["Retry-After"] == "1"
    if location is not None:
        assert resp.headers["Location"] == f"http://studio{API}/{location}"
    data: dict[str, Any] = resp.json()["data"]
    assert data["pending"] is True
    return data


async def test_an_import_started_while_the_read_model_lags_is_202_pending_not_404(held):
    client, gateway = held
    body = {"project_id": PROJECT, "path": "/imports/cats"}
    data = pending(await client.post(f"{API}/datasets/import/local", json=body), None)
    [command] = gateway.sent
    assert data["id"] == command.import_id
    assert (data["project_id"], data["state"], data["source"]) == (PROJECT, "running", body["path"])
    assert data["task_id"] == command.import_id
    assert data["check_url"].endswith(command.import_id)


async def test_a_queued_run_a_split_an_evaluation_and_an_export_are_202_pending(held):
    client, gateway = held
    body = {"project_id": PROJECT, "split_id": "s" * 32, "hyperparameters": {"epochs": 1}}
    run = pending(await client.post(f"{API}/training/run", json=body), None)
    queued = gateway.sent[-1]
    assert (run["id"], run["status"], run["split_id"]) == (queued.run_id, "queued", "s" * 32)
    assert run["project_id"] == PROJECT
    ratios = {"train": 0.7, "val": 0.3, "test": 0.0}
    split_body = {"project_id": PROJECT, "name": "s", "ratios": ratios}
    made = gateway.sent
    split = pending(await client.post(f"{API}/splits", json=split_body), None)
    assert (split["id"], split["name"]) == (made[-1].split_id, "s")
    for route in ("evaluation/run", "export/run"):
        job = pending(await client.post(f"{API}/{route}", json={"run_id": RUN}), None)
        started = gateway.sent[-1]
        assert (job["run_id"], job["status"]) == (RUN, "running")
        job_id = getattr(started, "evaluation_id", None) or started.export_id
        assert job["id"] == job_id and job["task_id"] == job_id


async def test_the_pending_answers_locations_name_what_was_made(held):
    client, gateway = held
    body = {"project_id": PROJECT, "split_id": "s" * 32, "hyperparameters": {"epochs": 1}}
    resp = await client.post(f"{API}/training/run", json=body)
    pending(resp, f"training/runs/{gateway.sent[-1].run_id}")
    resp = await client.post(
        f"{API}/datasets/import/local", json={"project_id": PROJECT, "path": "/x"}
    )
    pending(resp, f"datasets/import/{gateway.sent[-1].import_id}")
    resp = await client.post(
        f"{API}/splits",
        json={"project_id": PROJECT, "name": "s", "ratios": {"train": 0.5, "val": 0.5}},
    )
    pending(resp, f"splits/{gateway.sent[-1].split_id}")


async def test_a_stop_and_a_relabel_the_read_model_has_not_shown_are_pending_not_stale(held):
    client, gateway = held
    async with session(gateway.engine) as db:
        db.add(_image("cat"))
        db.add(_running())
        await db.commit()
    relabelled = await client.patch(
        f"{API}/datasets/{PROJECT}/images/{IMAGE}", json={"label": "dog"}
    )
    shown = pending(relabelled, None)
    assert (shown["id"], shown["label"]) == (IMAGE, "dog")
    stopping = await client.post(f"{API}/training/runs/{RUN}/stop")
    stopped = pending(stopping, f"training/runs/{RUN}")
    # the run as it was (pending: the stop is stored, the read model has not shown it yet)
    assert (stopped["id"], stopped["status"], stopped["task_id"]) == (RUN, "running", RUN)


def _running() -> RunRow:
    now = datetime.now(UTC)
    return RunRow(
        run_id=RUN, experiment_id="e" * 32, project_id=PROJECT, split_id="s" * 32,
        status="running", queued_seq=1, hyperparameters={}, classes=["a", "b"],
        train_images=2, val_images=2, epochs=3, created_at=now, updated_at=now,
    )  # fmt: skip


def _image(label: str) -> ImageRow:
    return ImageRow(
        dataset_id=PROJECT,
        image_id=IMAGE,
        filename="a.png",
        label=label,
        width=8,
        height=8,
        size=100,
        format="PNG",
        import_id="m" * 32,
    )


async def test_the_python_client_reads_each_pending_answer_as_what_it_asked_for(held):
    client, _ = held
    run = {"project_id": PROJECT, "split_id": "s" * 32, "hyperparameters": {"epochs": 1}}
    split = {"project_id": PROJECT, "name": "s", "ratios": {"train": 0.5, "val": 0.5}}
    asked = [
        ("training/run", run, models.Run),
        ("datasets/import/local", {"project_id": PROJECT, "path": "/x"}, models.Import),
        ("splits", split, models.Split),
        ("evaluation/run", {"run_id": RUN}, models.Evaluation),
        ("export/run", {"run_id": RUN}, models.Export),
    ]
    for route, body, model in asked:
        data = pending(await client.post(f"{API}/{route}", json=body), None)
        read = msgspec.convert(data, model, strict=False)  # as studio_client's transport does
        assert read.id == data["id"]

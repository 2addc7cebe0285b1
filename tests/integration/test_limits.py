"""Rate limits by tier, per IP for anonymous callers and per IP and username for sign-ins (429,
``Retry-After``, the envelope), and the caps: body size, page size, open streams, running
imports and queued runs per user. One studio with low limits; each test calls from client
addresses of its own (127.0.x.y: every counter starts at zero) so that no test spends another's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contracts import datasets as d
from contracts import new_id
from contracts import training as t
from services.kernel.eventstore import EventStore
from tests.stack import ADMIN, ADMIN_PASSWORD, API, Stack
from tests.stream_helpers import Runs, SseClient, frame, ws_url

STACK_SERVICES = ("projects",)
LIMITS = {
    "STUDIO_RATE_LIMIT_FREE": "3/minute",
    "STUDIO_RATE_LIMIT_BASIC": "6/minute",
    "STUDIO_RATE_LIMIT_PREMIUM": "100000/minute",
    "STUDIO_RATE_LIMIT_ANONYMOUS": "5/minute",
    "STUDIO_LOGIN_RATE_LIMIT": "3/minute",
    "STUDIO_MAX_BODY_BYTES": "4096",
    "STUDIO_UPLOAD_MAX_BYTES": "65536",
    "STUDIO_PAGE_SIZE_MAX": "20",
    "STUDIO_STREAMS_PER_USER": "2",
    "STUDIO_IMPORTS_PER_USER": "1",
    "STUDIO_QUEUED_RUNS_PER_USER": "1",
}
PASSWORD = "a-long-enough-password"
WAIT_S = 30.0
_addresses = itertools.count()


def fresh_ip() -> str:
    """A loopback address no request of this module has come from yet."""
    n = next(_addresses)
    return f"127.0.{n // 200 + 1}.{n % 200 + 2}"


def client(stack: Stack, token: str | None = None, ip: str | None = None) -> httpx.Client:
    """A client calling from ``ip`` (a fresh address by default), signed in with ``token``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.HTTPTransport(local_address=ip or fresh_ip())
    return httpx.Client(base_url=stack.base_url, headers=headers, transport=transport, timeout=15)


def sign_in(stack: Stack, user: str, password: str = PASSWORD, ip: str | None = None) -> str:
    with client(stack, ip=ip) as c:
        resp = c.post(f"{API}/auth/token", data={"username": user, "password": password})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def wait_for_admin(stack: Stack) -> str:
    """The admin's token once the identity service has created the admin: each try from an
    address of its own, so that waiting spends no sign-in limit a test counts on."""
    deadline = time.monotonic() + 60
    while True:
        with client(stack) as c:
            resp = c.post(f"{API}/auth/token", data={"username": ADMIN, "password": ADMIN_PASSWORD})
        if resp.status_code == 200:
            return str(resp.json()["access_token"])
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.2)


class Limited(Stack):
    """A studio with ``LIMITS`` and its admin's token (signed in without spending them)."""

    admin = ""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    stack = Limited(tmp_path_factory.mktemp("limited"), STACK_SERVICES, **LIMITS)
    try:
        stack.up()
        stack.admin = wait_for_admin(stack)
        yield stack
    finally:
        stack.down()


def admin(stack: Limited) -> httpx.Client:
    return client(stack, stack.admin)


def user(stack: Limited, tier: str = "premium") -> tuple[str, str]:
    """A new user of ``tier`` and their token."""
    name = f"u{new_id()[:12].lower()}"
    with admin(stack) as c:
        body = {"user_id": name, "password": PASSWORD, "site_role": "user", "tier": tier}
        assert c.post(f"{API}/users", json=body).status_code == 201
    return name, sign_in(stack, name)


def a_project(stack: Limited) -> str:
    """A new project of the admin's (runs and imports are read only within a project)."""
    with admin(stack) as c:
        resp = c.post(f"{API}/projects", json={"name": f"p {new_id()[:8]}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


def assert_refused(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == "error" and body["error"]["code"] == code
    assert body["request_id"] == resp.headers["x-request-id"]
    return body


def assert_rate_limited(resp: httpx.Response) -> None:
    assert_refused(resp, 429, "RATE_LIMITED")
    assert 1 <= int(resp.headers["retry-after"]) <= 60


# --- rates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "rate"), [("free", 3), ("basic", 6)])
def test_a_user_gets_their_tiers_rate_then_429_with_retry_after(
    limited: Limited, tier: str, rate: int
) -> None:
    _, token = user(limited, tier)
    _, neighbour = user(limited, tier)
    with client(limited, token) as c:
        assert [c.get(f"{API}/projects").status_code for _ in range(rate)] == [200] * rate
        assert_rate_limited(c.get(f"{API}/projects"))
        assert_rate_limited(c.get(f"{API}/auth/me"))  # every route, one counter per user
    # the counter is the user's, wherever they call from; a neighbour has their own
    with client(limited, token) as elsewhere:
        assert_rate_limited(elsewhere.get(f"{API}/projects"))
    with client(limited, neighbour) as c:
        assert c.get(f"{API}/projects").status_code == 200


def test_premium_users_get_far_more(limited: Limited) -> None:
    with admin(limited) as c:
        assert {c.get(f"{API}/projects").status_code for _ in range(30)} == {200}


def test_anonymous_callers_are_counted_per_ip_and_health_is_never_counted(
    limited: Limited,
) -> None:
    ip = fresh_ip()
    with client(limited, ip=ip) as c:
        assert [c.get(f"{API}/projects").status_code for _ in range(5)] == [401] * 5
        assert_rate_limited(c.get(f"{API}/projects"))
        # a bad token does not make a caller someone else
        assert_rate_limited(c.get(f"{API}/projects", headers={"Authorization": "Bearer x.y.z"}))
        assert {c.get("/health").status_code for _ in range(10)} == {200}
    with client(limited) as other_ip:
        assert other_ip.get(f"{API}/projects").status_code == 401


def test_sign_in_attempts_are_limited_per_ip_and_username(limited: Limited) -> None:
    victim, _ = user(limited)
    ip = fresh_ip()
    with client(limited, ip=ip) as c:
        wrong = {"username": victim, "password": "not-the-password"}
        assert [c.post(f"{API}/auth/token", data=wrong).status_code for _ in range(3)] == [401] * 3
        # over the limit even the right password waits: guessing is slow
        right = {"username": victim, "password": PASSWORD}
        assert_rate_limited(c.post(f"{API}/auth/token", data=right))
        # another user signs in from the same address undisturbed
        other = {"username": "someone-else", "password": "whatever-it-is"}
        assert c.post(f"{API}/auth/token", data=other).status_code == 401
    # and the victim from anywhere else
    assert sign_in(limited, victim)


# --- caps ------------------------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_413_declared_or_chunked(limited: Limited) -> None:
    project = {"name": "small enough"}
    with admin(limited) as c:
        big = c.post(f"{API}/projects", json={"name": "x", "description": "y" * 5000})
        assert_refused(big, 413, "PAYLOAD_TOO_LARGE")

        def chunks() -> Iterator[bytes]:
            yield b'{"name": "x", "description": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        chunked = c.post(
            f"{API}/projects", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in chunked.request.headers
        assert_refused(chunked, 413, "PAYLOAD_TOO_LARGE")
        assert c.post(f"{API}/projects", json=project).status_code == 201


def test_uploads_have_their_own_cap(limited: Limited) -> None:
    _, token = user(limited)
    path = f"{API}/datasets/import/upload?project_id={new_id()}"
    headers = {"content-type": "application/zip"}
    with client(limited, token) as c:
        # over the body cap but under the upload cap: refused for what it is, not its size
        assert c.post(path, content=b"z" * 10_000, headers=headers).status_code == 404
        assert_refused(
            c.post(path, content=b"z" * 200_000, headers=headers), 413, "ARCHIVE_TOO_LARGE"
        )
        # a prediction's image is an upload too: over the body cap, it is still looked at
        predict = f"{API}/export/{new_id()}/predict"
        assert c.post(predict, content=b"z" * 10_000, headers=headers).status_code == 404


def test_a_page_over_the_cap_is_refused_naming_limit(limited: Limited) -> None:
    with admin(limited) as c:
        assert c.get(f"{API}/projects", params={"limit": 20}).status_code == 200
        body = assert_refused(
            c.get(f"{API}/projects", params={"limit": 21}), 422, "VALIDATION_ERROR"
        )
        assert body["error"]["field"] == "limit"


@pytest.fixture
async def runs(limited: Limited) -> AsyncIterator[Runs]:
    nc, helper = await Runs.connect(limited.nats_url)
    yield helper
    await nc.close()


async def visible(stack: Limited, path: str) -> None:
    """Waits until the gateway's read model shows ``path`` to the admin."""
    deadline = time.monotonic() + WAIT_S
    async with httpx.AsyncClient(base_url=stack.base_url, headers=_bearer(stack)) as c:
        while (await c.get(path)).status_code != 200:
            assert time.monotonic() < deadline, path
            await asyncio.sleep(0.1)


def _bearer(stack: Limited) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin}"}


async def test_streams_per_user_are_capped_and_a_closed_one_gives_its_place_back(
    limited: Limited, runs: Runs
) -> None:
    experiment = new_id()
    project = a_project(limited)
    run_ids = [await runs.queue(experiment, project) for _ in range(3)]
    for run_id in run_ids:
        await visible(limited, f"{API}/training/runs/{run_id}")
    headers = _bearer(limited)
    opened = [
        SseClient(limited.base_url, f"{API}/training/runs/{r}/stream", headers) for r in run_ids[:2]
    ]
    for sse in opened:
        await sse.open()
        assert sse.status == 200
    async with httpx.AsyncClient(base_url=limited.base_url, headers=headers) as c:
        third = await c.get(f"{API}/training/runs/{run_ids[2]}/stream")
        assert_refused(third, 429, "TOO_MANY_STREAMS")
        # a WebSocket counts too: told why, then closed 4429
        async with connect(
            ws_url(limited.base_url, f"/ws/experiments/{experiment}"), additional_headers=headers
        ) as sock:
            refusal = frame(await asyncio.wait_for(sock.recv(), WAIT_S))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(sock.recv(), WAIT_S)
        assert refusal["type"] == "error" and refusal["payload"]["code"] == "TOO_MANY_STREAMS"
        assert sock.close_code == 4429
        # a stream that ends gives its place back (once the gateway sees the client gone)
        await opened[0].close()
        deadline = time.monotonic() + WAIT_S
        again = SseClient(limited.base_url, f"{API}/training/runs/{run_ids[2]}/stream", headers)
        while True:
            await again.open()
            if again.status == 200:
                break
            assert again.status == 429 and time.monotonic() < deadline
            await asyncio.sleep(0.2)
    for sse in (opened[1], again):
        await sse.close()


async def test_queued_runs_per_user_are_capped(limited: Limited, runs: Runs) -> None:
    capper, token = user(limited)
    _, other = user(limited)
    run_id = new_id()
    await runs.add(run_id, runs_queued(run_id, a_project(limited), actor=capper))
    await visible(limited, f"{API}/training/runs/{run_id}")
    body = {"project_id": new_id(), "split_id": new_id(), "hyperparameters": {"epochs": 1}}
    with client(limited, token) as c:
        assert_refused(c.post(f"{API}/training/run", json=body), 429, "TOO_MANY_QUEUED_RUNS")
        resume = c.post(f"{API}/training/runs/{new_id()}/resume", json={})
        assert_refused(resume, 429, "TOO_MANY_QUEUED_RUNS")
    with client(limited, other) as c:  # someone else's queue is theirs: refused for the project
        assert c.post(f"{API}/training/run", json=body).status_code == 404
    await runs.start(run_id)  # started: no longer waiting
    await visible_status(limited, run_id, "running")
    with client(limited, token) as c:
        assert c.post(f"{API}/training/run", json=body).status_code == 404


def runs_queued(run_id: str, project_id: str, actor: str) -> t.RunQueued:
    return t.RunQueued(
        run_id=run_id,
        experiment_id=new_id(),
        project_id=project_id,
        split_id=new_id(),
        hyperparameters=t.Hyperparameters(epochs=3),
        classes=["a", "b"],
        train_images=10,
        val_images=4,
        actor=actor,
    )


async def visible_status(stack: Limited, run_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT_S
    async with httpx.AsyncClient(base_url=stack.base_url, headers=_bearer(stack)) as c:
        while (await c.get(f"{API}/training/runs/{run_id}")).json()["data"]["status"] != status:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def test_running_imports_per_user_are_capped(limited: Limited, tmp_path: Path) -> None:
    capper, token = user(limited)
    dataset, import_id = a_project(limited), new_id()
    nc, store = await datasets_store(limited)
    started = d.ImportStarted(
        dataset_id=dataset,
        import_id=import_id,
        source_kind="local",
        source="x",
        format="auto",
        actor=capper,
    )
    await store.append(dataset, [started], await store.version(dataset))
    await visible(limited, f"{API}/datasets/import/{import_id}")
    body = {"project_id": new_id(), "path": "cats", "format": "auto"}
    with client(limited, token) as c:
        assert_refused(c.post(f"{API}/datasets/import/local", json=body), 429, "TOO_MANY_IMPORTS")
        upload = c.post(f"{API}/datasets/import/upload?project_id={new_id()}", content=b"z")
        assert_refused(upload, 429, "TOO_MANY_IMPORTS")
    failed = d.ImportFailed(dataset_id=dataset, import_id=import_id, code="BAD", message="no")
    await store.append(dataset, [failed], await store.version(dataset))
    deadline = time.monotonic() + WAIT_S
    with client(limited, token) as c:
        while (resp := c.post(f"{API}/datasets/import/local", json=body)).status_code == 429:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert resp.status_code == 404  # an import ended: the next is refused for the project
    await nc.close()


async def datasets_store(stack: Stack) -> tuple[Any, EventStore[Any]]:
    nc = await nats.connect(stack.nats_url)
    return nc, EventStore(nc, stream=d.STREAM, subject=d.event_subject, event_type=d.Event)

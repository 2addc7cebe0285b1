"""A gateway killed while keyed POSTs are in flight: each retry gets the first one's answer.

The projects and datasets services are paused so that a project's create and an import's
start are in flight; the gateway holding their ``Idempotency-Key``s is SIGKILLed (after each
claim's first heartbeat, so both commands were sent); the services then go on and do the work,
whose answers nobody receives. The retries with the keys on the restarted gateway take the dead
gateway's claims over (no heartbeat for the lease) and answer 201 naming that project and 202
naming that import — not 409 — and each ran once. A key with another body still answers 422.

Imports: tests.stack (the studio's processes), tests.imagesets (a tiny image set), nats-py
(the idempotency bucket and the event streams, read directly).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import nats
import pytest
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from contracts import datasets as c
from contracts import projects as p
from services.gateway.idempotency import BUCKET
from services.kernel.eventstore import EventStore
from tests import imagesets
from tests.reliability import figures
from tests.stack import API, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
IMAGES_PER_CLASS = 3


async def heartbeats(url: str, claims: int, timeout: float = 30.0) -> None:
    """Wait until each of ``claims`` claimed keys was renewed: its request runs (its command
    was sent)."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        first: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while True:
            now = {key: (await kv.get(key)).revision or 0 for key in await _keys(kv)}
            first = now | first
            if len(now) == claims and all(now[k] != first[k] for k in now):
                return
            assert time.monotonic() < deadline, "the claims were never renewed"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return await kv.keys()
    except NoKeysError:
        return []


async def created(url: str, project_id: str, dataset_id: str) -> tuple[int, int]:
    """How many ``ProjectCreated`` the project's stream holds, how many ``ImportStarted`` the
    dataset's."""
    nc = await nats.connect(url)
    try:
        project_store: EventStore[p.Event] = EventStore(
            nc, stream=p.STREAM, subject=p.event_subject, event_type=p.Event
        )
        dataset_store: EventStore[c.Event] = EventStore(
            nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )
        projects = await project_store.load(project_id)
        datasets = await dataset_store.load(dataset_id)
    finally:
        await nc.close()
    return (
        sum(isinstance(s.event, p.ProjectCreated) for s in projects),
        sum(isinstance(s.event, c.ImportStarted) for s in datasets),
    )


def post(stack: Stack, route: str, body: dict, key: str) -> httpx.Response:
    headers = stack.headers() | {"Idempotency-Key": key}
    return httpx.post(f"{stack.base_url}{API}{route}", json=body, headers=headers, timeout=60)


def die_in_flight(stack: Stack, requests: list[tuple[str, dict, str]]) -> None:
    """Send each keyed POST while the services are paused, SIGKILL the gateway once every claim
    was renewed (so every command was sent), then let the services go on: each does its work
    and answers a gateway that is gone."""
    lost: list[BaseException] = []

    def send(route: str, body: dict, key: str) -> None:
        try:
            post(stack, route, body, key)
        except httpx.HTTPError as exc:
            lost.append(exc)

    for name in STACK_SERVICES:
        stack.pause(name)
    sending = [threading.Thread(target=send, args=request) for request in requests]
    for thread in sending:
        thread.start()
    asyncio.run(heartbeats(stack.nats_url, len(requests)))
    stack.kill("gateway")
    for thread in sending:
        thread.join()
    assert len(lost) == len(requests), "a request was answered before its gateway died"
    for name in STACK_SERVICES:
        stack.resume(name)


def restart_gateway(stack: Stack) -> None:
    stack.start("gateway")
    stack.wait_healthy(60)


def wait_done(stack: Stack, import_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        url = f"{stack.base_url}{API}/datasets/import/{import_id}"
        data = httpx.get(url, headers=stack.headers(), timeout=15).json()["data"]
        if data["state"] in ("completed", "failed", "cancelled"):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.1)


def test_keyed_posts_whose_gateway_died_in_flight_answer_their_retries_as_the_first_would(
    tmp_path,
):
    # Long enough that the dead gateway's commands are never answered 503 before it dies.
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_REQUEST_TIMEOUT="30").up(60)
    try:
        url = f"{stack.base_url}{API}/projects"  # made with no key: the bucket holds only the two
        dataset_id = httpx.post(url, json={"name": "d"}, headers=stack.headers()).json()["data"][
            "id"
        ]
        source = imagesets.squares(stack.imports / "set", IMAGES_PER_CLASS)
        start = ("/datasets/import/local", {"project_id": dataset_id, "path": str(source)})
        create = ("/projects", {"name": "p"})
        keys = uuid.uuid4().hex, uuid.uuid4().hex
        die_in_flight(stack, [(*start, keys[0]), (*create, keys[1])])
        restart_gateway(stack)
        with ThreadPoolExecutor(2) as pool:  # each takes its dead claim over
            started, made = pool.map(
                lambda r: post(stack, *r), [(*start, keys[0]), (*create, keys[1])]
            )
        assert started.status_code == 202, started.text
        import_id = started.json()["data"]["id"]
        assert started.headers["Location"].endswith(f"/datasets/import/{import_id}")
        assert made.status_code == 201, made.text
        assert wait_done(stack, import_id)["state"] == "completed"
        again = post(stack, *start, keys[0])
        assert again.status_code == 202 and again.json()["data"]["id"] == import_id, again.text
        other = post(stack, start[0], start[1] | {"format": "folder"}, keys[0])
        assert other.status_code == 422, other.text
        counts = asyncio.run(created(stack.nats_url, made.json()["data"]["id"], dataset_id))
        assert counts == (1, 1)
        figures.record(
            "gateway SIGKILLed mid keyed POSTs",
            events_appended=2,
            duplicates_applied=sum(counts) - 2,
        )
    finally:
        stack.down()

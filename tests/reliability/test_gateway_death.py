"""A gateway killed while a keyed POST is in flight: the retry gets the first request's answer.

The datasets service is paused so that the import's start is in flight; the gateway holding
its ``Idempotency-Key`` is SIGKILLed (after its claim's first heartbeat, so the start command
was sent); the service then resumes and starts the import, whose answer nobody receives. A
retry with the key on the restarted gateway takes the dead gateway's claim over (no heartbeat
for the lease) and answers 202 naming that import — not 409 — and the import ran once. The
key with another body still answers 422.

Imports: tests.stack (the studio's processes), tests.imagesets (a tiny image set), nats-py
(the idempotency bucket and the datasets stream, read directly).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import nats
import pytest
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from contracts import datasets as c
from services.gateway.idempotency import BUCKET
from services.kernel.eventstore import EventStore
from tests import imagesets
from tests.reliability import figures
from tests.stack import API, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
IMAGES_PER_CLASS = 3


async def heartbeat(url: str, timeout: float = 30.0) -> None:
    """Wait until the one claimed key's revision moves: its request runs, its command sent."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        first: int | None = None
        deadline = time.monotonic() + timeout
        while True:
            keys = await _keys(kv)
            if keys:
                revision = (await kv.get(keys[0])).revision
                first = revision if first is None else first
                if revision != first:
                    return
            assert time.monotonic() < deadline, "the claim was never renewed"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return await kv.keys()
    except NoKeysError:
        return []


async def import_starts(url: str, dataset_id: str) -> int:
    nc = await nats.connect(url)
    try:
        store: EventStore[c.Event] = EventStore(
            nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )
        events = await store.load(dataset_id)
    finally:
        await nc.close()
    return sum(isinstance(s.event, c.ImportStarted) for s in events)


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


def test_a_keyed_import_whose_gateway_died_in_flight_answers_its_retry_with_that_import(
    tmp_path,
):
    # Long enough that the dead gateway's command is never answered 503 before it dies.
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_REQUEST_TIMEOUT="30").up(60)
    try:
        made = httpx.post(
            f"{stack.base_url}{API}/projects", json={"name": "p"}, headers=stack.headers()
        )
        project_id = made.json()["data"]["id"]
        source = imagesets.squares(stack.imports / "set", IMAGES_PER_CLASS)
        body = {"project_id": project_id, "path": str(source)}
        headers = stack.headers() | {"Idempotency-Key": uuid.uuid4().hex}
        url = f"{stack.base_url}{API}/datasets/import/local"
        lost: list[BaseException] = []

        def first() -> None:
            try:
                httpx.post(url, json=body, headers=headers, timeout=60)
            except httpx.HTTPError as exc:
                lost.append(exc)

        stack.pause("datasets")  # the import's start stays in flight
        sending = threading.Thread(target=first)
        sending.start()
        asyncio.run(heartbeat(stack.nats_url))
        stack.kill("gateway")  # SIGKILL, mid-request
        sending.join()
        assert lost, "the first request was answered before its gateway died"
        stack.resume("datasets")  # the service starts the import; its answer is lost
        restart_gateway(stack)

        retry = httpx.post(url, json=body, headers=headers, timeout=60)
        assert retry.status_code == 202, retry.text
        import_id = retry.json()["data"]["id"]
        assert retry.headers["Location"].endswith(f"/datasets/import/{import_id}")
        assert wait_done(stack, import_id)["state"] == "completed"
        again = httpx.post(url, json=body, headers=headers, timeout=60)
        assert again.status_code == 202, again.text
        assert again.json()["data"]["id"] == import_id
        other = httpx.post(url, json=body | {"format": "folder"}, headers=headers, timeout=60)
        assert other.status_code == 422, other.text
        starts = asyncio.run(import_starts(stack.nats_url, project_id))
        assert starts == 1
        figures.record(
            "gateway SIGKILLed mid keyed POST",
            events_appended=starts,
            duplicates_applied=starts - 1,
        )
    finally:
        stack.down()

"""Hundreds of open streams on one gateway: the REST API keeps answering and every client gets
every event. (The REST latency under this load is measured by ``bench/stream_bench.py``; a
test asserts no wall-clock time.)"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from contracts import new_id
from tests.stack import Stack
from tests.stream_helpers import Runs, SseClient, frame, ws_url

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)
API = "/api/v1"
SSE_CLIENTS, SOCKETS, RENAMES, EPOCHS = 500, 50, 3, 3
#: A project's history once created: the project, and its creator made its owner.
CREATED = ["project_created", "member_added"]
#: A bound on each stage, far above what it needs, so that a stalled gateway fails the test.
STAGE_S = 90.0


async def open_sse(stack: Stack, path: str, count: int) -> list[SseClient]:
    clients = [SseClient(stack.base_url, path, stack.headers()) for _ in range(count)]
    for batch in range(0, count, 50):
        await asyncio.gather(*(c.open() for c in clients[batch : batch + 50]))
    return clients


async def open_socket(stack: Stack, experiment: str) -> tuple[ClientConnection, list[dict]]:
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    sock = await connect(url, additional_headers=stack.headers())
    return sock, [frame(await sock.recv())]  # its snapshot


async def follow(sock: ClientConnection, seen: list[dict]) -> None:
    """Every message until the server closes the socket at the experiment's end."""
    try:
        while True:
            seen.append(frame(await sock.recv()))
    except ConnectionClosedOK:
        return


async def rest(api: httpx.AsyncClient, paths: list[str], rounds: int) -> list[Any]:
    """GETs one after another; each answer's status, or the exception (a timeout)."""
    answers: list[Any] = []
    for _ in range(rounds):
        for path in paths:
            try:
                answers.append((await api.get(path)).status_code)
            except httpx.HTTPError as exc:
                answers.append(repr(exc))
    return answers


async def test_500_sse_clients_and_50_websockets_leave_the_api_answering(stack: Stack):
    api = stack.client(timeout=20)
    created = await api.post(f"{API}/projects", json={"name": "watched"})
    pid = created.json()["data"]["id"]
    nc, runs = await Runs.connect(stack.nats_url)
    experiment = new_id()
    run_id = await runs.queue(experiment)
    await runs.start(run_id)

    # given 500 SSE clients on a project's events, each with its history (the creation) ...
    async with asyncio.timeout(STAGE_S):
        clients = await open_sse(stack, f"{API}/projects/{pid}/events", SSE_CLIENTS)
        for client in clients:
            await client.wait(lambda c: len(c.events) >= len(CREATED), STAGE_S)
    assert {c.status for c in clients} == {200}
    assert all(c.names() == CREATED for c in clients)
    # ... and 50 WebSockets on an experiment, each with its snapshot
    async with asyncio.timeout(STAGE_S):
        sockets = [await open_socket(stack, experiment) for _ in range(SOCKETS)]
    assert all(seen[0]["type"] == "snapshot" for _, seen in sockets)
    followers = [asyncio.create_task(follow(sock, seen)) for sock, seen in sockets]

    # when REST GETs run while the project changes and the run trains to its end
    paths = [f"{API}/projects/{pid}", f"{API}/training/runs/{run_id}", f"{API}/projects"]
    readers = [asyncio.create_task(rest(api, paths, rounds=10)) for _ in range(4)]
    async with asyncio.timeout(STAGE_S):
        for n in range(1, RENAMES + 1):
            renamed = await api.patch(f"{API}/projects/{pid}", json={"name": f"renamed {n}"})
            assert renamed.status_code == 200, renamed.text
        for n in range(1, EPOCHS + 1):
            await runs.epochs(run_id, n)
        await runs.complete(run_id, EPOCHS)
        answers = [a for batch in await asyncio.gather(*readers) for a in batch]
        await asyncio.gather(*followers)
        for client in clients:
            await client.wait(lambda c: len(c.events) == len(CREATED) + RENAMES, STAGE_S)

    # then every GET answered 200 (none 500, none timed out) ...
    assert answers and set(answers) == {200}, sorted(set(map(str, answers)))
    # ... every SSE client got every event, in order, and is still open
    expected = CREATED + ["project_renamed"] * RENAMES
    assert [c for c in clients if c.names() != expected] == []
    assert not any(c.ended for c in clients)
    # ... and every WebSocket got every epoch and the end, then a normal close
    for sock, seen in sockets:
        kinds = [m["type"] for m in seen]
        assert kinds.count("epoch_end") == EPOCHS and kinds[-1] == "complete", kinds
        assert sock.close_code == 1000
    for client in clients:
        await client.close()
    # and the gateway is healthy: its read model kept updating throughout
    assert (await api.get("/health")).status_code == 200
    await api.aclose()
    await nc.close()

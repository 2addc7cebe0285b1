"""``client.experiments``'s WebSocket against a real local server (``websockets``): the
snapshot then each message until the studio closes it, a callback that stops it, refusals as
typed errors, a broken connection opened again after the last stored event (none twice), an
expired token refreshed once in a row, and the blocking client's counterpart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from studio_client import AsyncStudioClient, NotFound, RetryPolicy, StudioClient, Unauthorized
from studio_client.models import SocketMessage

FAST = RetryPolicy(attempts=4, backoff=0.001, max_backoff=0.002)


Script = tuple[list[dict[str, Any]], int | None]


@asynccontextmanager
async def socket_server(
    frames: list[dict[str, Any]], close: int | None = 1000, then: tuple[Script, ...] = ()
) -> AsyncIterator[Any]:
    """A server that records each handshake's path and headers, sends ``frames`` and closes
    with ``close`` (``None``: the connection breaks, no close frame); later connections play
    the scripts of ``then``."""
    handshakes: list[tuple[str, dict[str, str]]] = []
    scripts = [(frames, close), *then]

    async def handler(connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        handshakes.append((request.path, dict(request.headers.raw_items())))
        sent, code = scripts[min(len(handshakes), len(scripts)) - 1]
        for frame in sent:
            await connection.send(json.dumps(frame))
        if code is None:
            connection.transport.abort()
        else:
            await connection.close(code=code, reason="done")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = AsyncStudioClient(f"http://127.0.0.1:{port}", token="tok", retry=FAST)
        try:
            yield client, handshakes
        finally:
            await client.aclose()


async def test_a_socket_gives_the_snapshot_then_each_message_until_the_studio_closes_it():
    frames = [
        {"type": "snapshot", "payload": {"experiment_id": "e1", "trials": []}},
        {"type": "trial_started", "payload": {"trial": 0, "run_id": "r0", "sequence": 3}},
        {"type": "complete", "payload": {"trials": 1, "sequence": 9}},
    ]
    got: list[SocketMessage] = []
    async with socket_server(frames) as (client, handshakes):
        count = await client.experiments.connect_websocket("e1", got.append, last_event_id=2)
    assert count == 3 and [m.type for m in got] == ["snapshot", "trial_started", "complete"]
    assert got[1].payload["run_id"] == "r0"
    path, headers = handshakes[0]
    assert path == "/ws/experiments/e1?last_event_id=2"
    assert headers["Authorization"] == "Bearer tok"


async def test_a_callback_that_returns_true_closes_the_socket_and_may_be_a_coroutine():
    frames = [{"type": "snapshot", "payload": {}}, {"type": "trial_started", "payload": {}}] * 3

    async def first_only(message: SocketMessage) -> bool:
        return True

    async with socket_server(frames) as (client, _):
        assert await client.experiments.connect_websocket("e1", first_only) == 1


@pytest.mark.parametrize(
    ("code", "error", "kind"),
    [(4404, "NOT_FOUND", NotFound), (4401, "UNAUTHENTICATED", Unauthorized)],
)
async def test_a_refused_socket_raises_the_typed_error_of_its_error_frame(
    code: int, error: str, kind: type[Exception]
):
    frames = [{"type": "error", "payload": {"code": error, "message": "no such experiment"}}]
    async with socket_server(frames, close=code) as (client, _):
        with pytest.raises(kind) as refused:
            await client.experiments.connect_websocket("e1", lambda m: None)
    assert getattr(refused.value, "code", None) == error


async def test_the_blocking_client_listens_too_its_callback_on_the_clients_thread():
    frames = [{"type": "snapshot", "payload": {}}, {"type": "complete", "payload": {}}]
    got: list[str] = []
    async with socket_server(frames) as (client, _):
        port = client.base_url.split(":")[2].split("/")[0]
        with StudioClient(f"http://127.0.0.1:{port}", api_key="sk_x") as blocking:
            count = await asyncio.to_thread(
                blocking.experiments.connect_websocket, "e1", lambda m: got.append(m.type)
            )
    assert count == 2 and got == ["snapshot", "complete"]


async def test_a_broken_socket_is_opened_again_after_the_last_stored_event_none_twice():
    # given a socket that breaks after event 3, then one closed by a restarting gateway
    snapshot = {"type": "snapshot", "payload": {"sequence": 99}}

    def event(kind: str, seq: int) -> dict[str, Any]:
        return {"type": kind, "payload": {"sequence": seq}}

    first = [snapshot, event("trial_started", 3)]
    restarting: Script = ([snapshot, event("trial_started", 3)], 1012)
    last: Script = ([snapshot, event("epoch_end", 4), event("complete", 5)], 1000)
    got: list[tuple[str, Any]] = []

    # when it is listened to
    async with socket_server(first, None, (restarting, last)) as (client, handshakes):
        count = await client.experiments.connect_websocket(
            "e1", lambda m: got.append((m.type, m.payload["sequence"]))
        )

    # then each connection asked after the last stored event, and none came twice
    assert [path for path, _ in handshakes] == [
        "/ws/experiments/e1",
        "/ws/experiments/e1?last_event_id=3",
        "/ws/experiments/e1?last_event_id=3",
    ]
    assert got == [
        ("snapshot", 99),
        ("trial_started", 3),
        ("snapshot", 99),
        ("snapshot", 99),
        ("epoch_end", 4),
        ("complete", 5),
    ]
    assert count == len(got)


async def test_a_socket_closed_as_its_token_expired_goes_on_after_a_refresh_once_in_a_row():
    expired = {"type": "error", "payload": {"code": "UNAUTHENTICATED", "message": "expired"}}
    snapshot = {"type": "snapshot", "payload": {}}
    done = {"type": "complete", "payload": {"sequence": 7}}
    refreshes: list[int] = []

    async def refresh() -> bool:
        refreshes.append(1)
        client.transport.token = f"new{len(refreshes)}"
        return True

    # given a session's socket closed 4401, then (refreshed) one that ends normally
    then: tuple[Script, ...] = (([done], 1000),)
    async with socket_server([snapshot, expired], 4401, then) as (client, handshakes):
        client.transport.refresh = refresh
        assert await client.experiments.connect_websocket("e1", lambda m: None) == 2
    assert [h["Authorization"] for _, h in handshakes] == ["Bearer tok", "Bearer new1"]

    # and a socket refused again at once after a refresh is refused for good
    again: tuple[Script, ...] = (([expired], 4401),)
    async with socket_server([expired], 4401, again) as (client, handshakes):
        client.transport.refresh = refresh
        with pytest.raises(Unauthorized):
            await client.experiments.connect_websocket("e1", lambda m: None)
    assert len(handshakes) == 2

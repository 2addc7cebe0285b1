"""Run and experiment streams against the running gateway: they end, and the WebSocket speaks
text JSON that starts with a snapshot. Runs are written straight into the event store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from contracts import new_id
from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.stack import Stack
from tests.stream_helpers import Runs, SseClient, frame, ws_url

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)
API = "/api/v1"
WAIT_S = 30.0


async def read_to_end(stack: Stack, path: str, **headers: str) -> SseClient:
    client = SseClient(stack.base_url, path, stack.headers() | headers)
    await client.open()
    await client.wait(lambda c: c.ended, WAIT_S)
    await client.close()
    return client


async def receive_all(stack: Stack, url: str) -> tuple[list[dict], int | None]:
    """Every message of a socket until the server closes it, and the close code."""
    messages = []
    async with connect(url, additional_headers=stack.headers()) as sock:
        try:
            while True:
                messages.append(frame(await asyncio.wait_for(sock.recv(), WAIT_S)))
        except ConnectionClosed:
            pass
    return messages, sock.close_code


async def test_a_finished_run_streams_its_history_then_ends(stack: Stack):
    nc, runs = await Runs.connect(stack.nats_url)
    run_id = await runs.queue(new_id())
    await runs.start(run_id)
    await runs.epochs(run_id, 1, 2)
    last = await runs.complete(run_id, 2)
    # when a client connects to the finished run
    client = await read_to_end(stack, f"{API}/training/runs/{run_id}/stream")
    # then it gets the history, complete last, and the server ends the stream
    assert client.ended
    assert client.names() == ["status", "status", "epoch_end", "epoch_end", "complete"]
    assert client.events[-1][0] == str(last)
    # and a browser that reconnects with the last id is told to stop (204), not fed forever
    again = await read_to_end(
        stack, f"{API}/training/runs/{run_id}/stream", **{"Last-Event-ID": str(last)}
    )
    assert again.status == 204
    await nc.close()


async def test_a_live_run_stream_ends_after_complete_and_a_failed_one_after_error(stack: Stack):
    nc, runs = await Runs.connect(stack.nats_url)
    ok_run, bad_run = await runs.queue(new_id()), await runs.queue(new_id())
    for run_id in (ok_run, bad_run):
        await runs.start(run_id)
    clients = [
        SseClient(stack.base_url, f"{API}/training/runs/{r}/stream", stack.headers())
        for r in (ok_run, bad_run)
    ]
    for client in clients:
        await client.open()
        await client.wait(lambda c: len(c.events) == 2, WAIT_S)  # queued, running
        assert not client.ended
    # when one run trains and completes and the other fails
    await runs.epochs(ok_run, 1)
    await runs.complete(ok_run, 1)
    await runs.fail(bad_run)
    for client in clients:
        await client.wait(lambda c: c.ended, WAIT_S)
        await client.close()
    # then each stream ends on its final event
    assert clients[0].ended and clients[0].names()[-2:] == ["epoch_end", "complete"]
    assert clients[1].ended and clients[1].names()[-1] == "error"
    await nc.close()


async def test_a_resumed_run_streams_past_its_first_complete_until_its_last(stack: Stack):
    from contracts import training as c

    nc, runs = await Runs.connect(stack.nats_url)
    run_id = await runs.queue(new_id())
    await runs.start(run_id)
    await runs.epochs(run_id, 1)
    await runs.complete(run_id, 1)
    await runs.add(run_id, c.RunResumed(run_id=run_id, epochs=2))
    await runs.start(run_id)
    client = SseClient(stack.base_url, f"{API}/training/runs/{run_id}/stream", stack.headers())
    await client.open()
    # the first complete belongs to the past: the stream goes on to the live run
    await client.wait(lambda c: len(c.events) == 6, WAIT_S)
    assert client.names()[3] == "complete" and not client.ended
    await runs.epochs(run_id, 2)
    await runs.complete(run_id, 2)
    await client.wait(lambda c: c.ended, WAIT_S)
    await client.close()
    assert client.ended and client.names()[-2:] == ["epoch_end", "complete"]
    await nc.close()


async def test_the_experiment_stream_ends_when_every_run_is_over(stack: Stack):
    nc, runs = await Runs.connect(stack.nats_url)
    experiment, project = new_id(), new_id()
    first = await runs.queue(experiment, project)
    await runs.start(first)
    await runs.epochs(first, 1)
    await runs.complete(first, 1)
    second = await runs.queue(experiment, project)
    await runs.start(second)
    path = f"{API}/training/{project}/experiments/{experiment}/stream"
    client = SseClient(stack.base_url, path, stack.headers())
    await client.open()
    await client.wait(lambda c: c.names().count("status") == 4, WAIT_S)
    # one run over, one running: the stream goes on, and follows a run queued into it later
    assert "complete" in client.names() and not client.ended
    third = await runs.queue(experiment, project)
    await runs.complete(second, 0)
    await client.wait(lambda c: c.names().count("complete") == 2, WAIT_S)
    assert not client.ended
    await runs.start(third)
    await runs.fail(third)
    await client.wait(lambda c: c.ended, WAIT_S)
    await client.close()
    assert client.ended and client.names()[-1] == "error"
    # an experiment that no run carries is unknown, not an empty stream left open forever
    unknown = await read_to_end(stack, f"{API}/training/{project}/experiments/{new_id()}/stream")
    assert unknown.status == 404
    await nc.close()


async def test_the_websocket_sends_text_json_a_snapshot_first_and_closes_at_the_end(stack: Stack):
    nc, runs = await Runs.connect(stack.nats_url)
    experiment = new_id()
    run_id = await runs.queue(experiment)
    await runs.start(run_id)
    await runs.epochs(run_id, 1, 2)
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    async with connect(url, additional_headers=stack.headers()) as sock:
        snapshot = frame(await asyncio.wait_for(sock.recv(), WAIT_S))
        # the experiment finishes while the browser watches it
        await runs.epochs(run_id, 3)
        await runs.complete(run_id, 3)
        messages = []
        with pytest.raises(ConnectionClosedOK):
            while True:
                messages.append(frame(await asyncio.wait_for(sock.recv(), WAIT_S)))
    # then every frame was text JSON, the first a snapshot of the runs with their latest metrics
    assert snapshot["type"] == "snapshot"
    (run,) = snapshot["payload"]["runs"]
    assert run["id"] == run_id and run["status"] == "running"
    assert run["latest"]["epoch"] == 2 and run["latest"]["val_accuracy"] == pytest.approx(0.52)
    kinds = [m["type"] for m in messages]
    assert kinds.count("epoch_end") == 3 and kinds[-1] == "complete"
    assert all(set(m) == {"type", "payload"} for m in messages)
    # and the server closed the socket normally once the experiment was over
    assert sock.close_code == 1000
    await nc.close()


@pytest.mark.parametrize("experiment", ["test", "no-such-experiment", "bad%20id"])
async def test_an_unknown_experiment_gets_an_error_and_a_close_never_silence(
    stack: Stack, experiment
):
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    messages, code = await receive_all(stack, url)
    assert [m["type"] for m in messages] == ["error"]
    assert messages[0]["payload"]["code"] == "NOT_FOUND"
    assert code == 4404


def test_the_original_documents_websocket_test_passes_with_starlettes_test_client(
    stack: Stack, tmp_path: Path
):
    """The source documents' test, verbatim, against a gateway of its own on the same NATS."""
    settings = Settings(
        nats_url=stack.nats_url,
        workspace=tmp_path,
        instance="testclient",
        services=("projects",),
        jwt_secret=stack.jwt_secret,  # the stack's tokens, checked against the same users
    )
    experiment = new_id()

    async def a_finished_run() -> None:
        nc, runs = await Runs.connect(stack.nats_url)
        run_id = await runs.queue(experiment)
        await runs.start(run_id)
        await runs.epochs(run_id, 1)
        await runs.complete(run_id, 1)
        await nc.close()

    asyncio.run(a_finished_run())
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/ws/experiments/test", headers=stack.headers()) as ws:
            data = ws.receive_json()
            assert "type" in data and "payload" in data
        assert data["type"] == "error" and data["payload"]["code"] == "NOT_FOUND"
        # a known experiment: text JSON (receive_json reads text frames only), snapshot first
        url = f"/ws/experiments/{experiment}"
        with client.websocket_connect(url, headers=stack.headers()) as ws:
            snapshot = ws.receive_json()
            kinds = []
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    kinds.append(ws.receive_json()["type"])
        assert snapshot["type"] == "snapshot"
        assert snapshot["payload"]["runs"][0]["status"] == "completed"
        assert snapshot["payload"]["runs"][0]["latest"]["epoch"] == 1
        assert kinds == ["status", "status", "epoch_end", "complete"]
        assert closed.value.code == 1000


def test_a_binary_frame_would_fail_this_test():
    """The browser-like check itself: a bytes frame is refused, a text one decoded."""
    with pytest.raises(AssertionError):
        frame(json.dumps({"type": "x"}).encode())
    assert frame('{"type": "x", "payload": {}}')["type"] == "x"

"""A script written against the original documents' paths runs unchanged: plain httpx and a
WebSocket client, the documents' URLs (``/api/...``), nothing of this repository's helpers in the
calls themselves. It imports by ``source_path`` and by a ZIP upload on the one import endpoint,
reads an image and a thumbnail by file name, follows a run as ``EventSource`` would until the
server closes the stream after ``complete``, and follows the same run on the ``/ws/{client_id}``
hub. Then what such a client gets wrong is answered clearly, and the new paths shadow nothing
of today's."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.access_helpers import user
from tests.imagesets import squares, zip_dir
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("identity", "projects", "datasets", "trainer")
WAIT_S = 120.0
#: Two epochs of the small CNN on tiny images: seconds on a CPU.
HYPERPARAMETERS = {"model": "smallcnn", "epochs": 2, "batch_size": 8, "image_size": 32}


def wait_for(check: Any, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def data(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json()["data"]


def settled(api: httpx.Client, check_url: str) -> dict[str, Any]:
    """The task at ``check_url`` once it is over."""
    over = ("completed", "failed", "cancelled")
    return wait_for(lambda: (t := data(api.get(check_url)))["status"] in over and t)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def script(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the documents' script does first: a project, two imports, a split, a 2-epoch run.
    The two imports share file names (``tl/tl_0.png`` ...) with different images in them."""
    user_id, token = user(stack, "dora")
    api = httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    project_id = data(api.post("/api/projects", json={"name": "documents"}), 201)["id"]
    folder = squares(stack.imports / uuid.uuid4().hex, 12)
    body = {"project_id": project_id, "source_path": str(folder), "format": "folder"}
    local = data(api.post("/api/datasets/import", json=body), 202)
    assert settled(api, local["check_url"])["status"] == "completed"
    here = tmp_path_factory.mktemp("zip")
    archive = zip_dir(squares(here / "set", 4, start=1000), here / "set.zip")
    with archive.open("rb") as fh:
        form = {"project_id": project_id, "format": "folder"}
        files = {"file": ("set.zip", fh, "application/zip")}
        upload = data(api.post("/api/datasets/import", data=form, files=files), 202)
    assert settled(api, upload["check_url"])["status"] == "completed"
    ratios = {"train": 0.7, "val": 0.3, "test": 0.0}
    body = {"project_id": project_id, "name": "s", "ratios": ratios}
    split = data(api.post("/api/splits", json=body), 201)
    body = {"project_id": project_id, "split_id": split["id"], "hyperparameters": HYPERPARAMETERS}
    run = data(api.post("/api/training/run", json=body), 202)
    return {
        "api": api,
        "token": token,
        "user_id": user_id,
        "project_id": project_id,
        "folder": folder,
        "imports": (local, upload),
        "run": run,
    }


# --- the script, as the documents write it ------------------------------------------------------


def test_imports_answer_202_with_their_task_and_the_images_are_there(script):
    api, project_id = script["api"], script["project_id"]
    local, upload = script["imports"]
    for job in (local, upload):
        assert job["task_id"] == job["id"] and job["check_url"] == f"/api/v1/tasks/{job['id']}"
    # the server path is the documents' source_path; the upload's file is the ZIP's name
    assert local["source"] == str(script["folder"]) and local["source_kind"] == "local"
    assert upload["source_kind"] == "upload"
    summary = data(api.get(f"/api/datasets/{project_id}"))
    assert summary["images"] == 24 + 8, summary


def test_an_image_and_its_thumbnail_by_file_name(script):
    api, project_id = script["api"], script["project_id"]
    name = "tl/tl_7.png"  # in the folder import only
    image = api.get(f"/api/datasets/{project_id}/image/{name}")
    assert image.status_code == 200, image.text
    assert image.content == (script["folder"] / name).read_bytes()
    assert image.headers["content-type"] == "image/png"
    thumbnail = api.get(f"/api/datasets/{project_id}/thumbnail/{name}")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    # a name percent-encoded as a browser sends it is the same image
    encoded = api.get(f"/api/datasets/{project_id}/image/tl%2Ftl_7.png")
    assert encoded.status_code == 200 and encoded.content == image.content
    # and an image's id still names it on the same path (an ETag is its id)
    image_id = image.headers["etag"].strip('"')
    by_id = api.get(f"/api/datasets/{project_id}/image/{image_id}")
    assert by_id.status_code == 200 and by_id.content == image.content


def test_a_file_name_two_imports_hold_is_a_409_listing_both_ids(script):
    api, project_id = script["api"], script["project_id"]
    resp = api.get(f"/api/datasets/{project_id}/image/tl/tl_0.png")
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == "CONFLICT" and error["field"] == "filename"
    assert len(error["ids"]) == 2 and "tl/tl_0.png" in error["message"]
    for image_id in error["ids"]:  # each id answers on the very same path
        assert api.get(f"/api/datasets/{project_id}/image/{image_id}").status_code == 200
    missing = api.get(f"/api/datasets/{project_id}/thumbnail/tl/none.png")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def read_event_source(stack: Stack, url: str, headers: dict[str, str]) -> list[tuple[str, Any]]:
    """Every (event, data) of an SSE stream until the server closes it, as EventSource parses
    it (an error if the server never closes it within the wait)."""
    events, name, lines = [], "message", []
    timeout = httpx.Timeout(WAIT_S, connect=10)
    with httpx.stream("GET", stack.base_url + url, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                lines.append(line.partition(":")[2].strip())
            elif not line and lines:
                events.append((name, json.loads("\n".join(lines))))
                name, lines = "message", []
    return events


def test_the_run_stream_sends_epoch_end_then_complete_and_closes(stack: Stack, script):
    run_id = script["run"]["id"]
    auth = {"Authorization": f"Bearer {script['token']}"}
    events = read_event_source(stack, f"/api/training/{run_id}/stream", auth)
    names = [name for name, _ in events if name != "progress"]
    assert names.count("epoch_end") == 2 and names[-1] == "complete", names
    epochs = [payload["epoch"] for name, payload in events if name == "epoch_end"]
    assert epochs == [1, 2] and events[-1][1]["run_id"] == run_id
    # EventSource sends no header: a stream token in the URL opens it as well
    with httpx.Client(base_url=stack.base_url, headers=auth) as api:
        ticket = data(api.post("/api/auth/stream-token"))["stream_token"]
    again = read_event_source(stack, f"/api/training/{run_id}/stream?access_token={ticket}", {})
    assert [n for n, _ in again if n != "progress"] == names


async def frames_until(sock: ClientConnection, last: Any) -> list[dict[str, Any]]:
    """Text frames of JSON until one for which ``last`` holds (included)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while not got or not last(got[-1]):
            raw = await sock.recv()
            assert isinstance(raw, str), f"a binary frame: {raw!r}"
            got.append(json.loads(raw))
    return got


def ws_url(stack: Stack, client_id: str) -> str:
    return stack.base_url.replace("http://", "ws://") + f"/ws/{client_id}"


async def send(sock: ClientConnection, kind: str, payload: Any) -> None:
    await sock.send(json.dumps({"type": kind, "payload": payload}))


async def test_the_hub_sends_a_subscribed_runs_epochs_and_its_end(stack: Stack, script):
    run_id, import_id = script["run"]["id"], script["imports"][0]["id"]
    headers = {"Authorization": f"Bearer {script['token']}"}
    async with connect(ws_url(stack, "notebook-1"), additional_headers=headers) as sock:
        await send(sock, "subscribe", {"run_id": run_id})
        frames = await frames_until(sock, lambda f: f["type"] in ("complete", "error"))
        assert frames[0] == {"type": "subscribed", "payload": {"run_id": run_id}}
        assert all(set(f) == {"type", "payload"} for f in frames)
        assert all(f["payload"]["run_id"] == run_id for f in frames)
        kinds = [f["type"] for f in frames if f["type"] != "progress"]
        assert kinds.count("epoch_end") == 2 and kinds[-1] == "complete", kinds
        # an import is followed on the same socket, to its end
        await send(sock, "subscribe", {"import_id": import_id})
        frames = await frames_until(sock, lambda f: f["type"] in ("complete", "error"))
        assert frames[0]["type"] == "subscribed" and frames[-1]["type"] == "complete"
        assert frames[-1]["payload"]["import_id"] == import_id
        # and the socket stays open for more
        await send(sock, "ping", {})
        assert (await frames_until(sock, lambda f: True))[0]["type"] == "pong"


async def test_the_hub_follows_an_experiment_and_unsubscribes(stack: Stack, script):
    experiment_id, run_id = script["run"]["experiment_id"], script["run"]["id"]
    headers = {"Authorization": f"Bearer {script['token']}"}
    async with connect(ws_url(stack, "notebook-2"), additional_headers=headers) as sock:
        await send(sock, "subscribe", {"experiment_id": experiment_id})
        frames = await frames_until(sock, lambda f: f["type"] in ("complete", "error"))
        assert frames[0]["type"] == "subscribed" and frames[-1]["type"] == "complete"
        assert {f["payload"]["experiment_id"] for f in frames} == {experiment_id}
        await send(sock, "unsubscribe", {"experiment_id": experiment_id})
        frame = (await frames_until(sock, lambda f: True))[0]
        assert frame == {"type": "unsubscribed", "payload": {"experiment_id": experiment_id}}
        # a run subscribed then unsubscribed at once: nothing of it after the acknowledgement
        await send(sock, "subscribe", {"run_id": run_id})
        await send(sock, "unsubscribe", {"run_id": run_id})
        await send(sock, "ping", {})
        frames = await frames_until(sock, lambda f: f["type"] == "pong")
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "subscribed" and kinds[-2:] == ["unsubscribed", "pong"], kinds


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "VALIDATION_ERROR"),
        ('["a list"]', "VALIDATION_ERROR"),
        ('{"type": "dance", "payload": {}}', "VALIDATION_ERROR"),
        ('{"type": "subscribe", "payload": {}}', "VALIDATION_ERROR"),
        ('{"type": "subscribe", "payload": {"run_id": "a", "import_id": "b"}}', "VALIDATION_ERROR"),
        ('{"type": "subscribe", "payload": "run"}', "VALIDATION_ERROR"),
        ('{"type": "subscribe", "payload": {"run_id": "../x"}}', "NOT_FOUND"),
        ('{"type": "subscribe", "payload": {"run_id": "nope"}}', "NOT_FOUND"),
        ('{"type": "unsubscribe", "payload": {"run_id": 7}}', "NOT_FOUND"),
    ],
)
async def test_a_bad_hub_message_is_an_error_frame_and_the_socket_stays_open(
    stack: Stack, script, message, code
):
    headers = {"Authorization": f"Bearer {script['token']}"}
    async with connect(ws_url(stack, "notebook-3"), additional_headers=headers) as sock:
        await sock.send(message)
        frame = (await frames_until(sock, lambda f: True))[0]
        assert frame["type"] == "error" and frame["payload"]["code"] == code, frame
        assert frame["payload"]["message"]
        await send(sock, "ping", {})
        assert (await frames_until(sock, lambda f: True))[0]["type"] == "pong"


async def test_the_hub_tells_another_user_a_run_does_not_exist(stack: Stack, script):
    _, token = user(stack, "eve")
    theirs, unknown = script["run"]["id"], uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url(stack, "eve-1"), additional_headers=headers) as sock:
        errors = []
        for run_id in (theirs, unknown):
            await send(sock, "subscribe", {"run_id": run_id})
            errors.append((await frames_until(sock, lambda f: True))[0])
        for frame, run_id in zip(errors, (theirs, unknown), strict=True):
            assert frame["type"] == "error" and frame["payload"]["code"] == "NOT_FOUND"
            assert frame["payload"]["message"] == f"run {run_id} does not exist"
        await send(sock, "subscribe", {"import_id": script["imports"][0]["id"]})
        frame = (await frames_until(sock, lambda f: True))[0]
        assert frame["type"] == "error" and frame["payload"]["code"] == "NOT_FOUND"


async def test_the_hub_refuses_a_socket_without_credentials(stack: Stack):
    async with connect(ws_url(stack, "anonymous")) as sock:
        frame = json.loads(await sock.recv())
        with pytest.raises(ConnectionClosed):
            await sock.recv()
    assert frame["type"] == "error" and frame["payload"]["code"] == "UNAUTHENTICATED"
    assert sock.close_code == 4401


async def test_a_hub_socket_whose_session_ended_subscribes_to_nothing_more(stack: Stack, script):
    user_id, token = user(stack, "sam")
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url(stack, "sam-1"), additional_headers=headers) as sock:
        await send(sock, "ping", {})
        assert (await frames_until(sock, lambda f: True))[0]["type"] == "pong"
        # when the user signs out while the socket is open
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers) as api:
            assert (await api.post("/api/auth/logout")).status_code in (200, 204)
        # then a subscription is refused with why, and the socket is closed as unauthenticated
        await send(sock, "subscribe", {"run_id": script["run"]["id"]})
        frame = (await frames_until(sock, lambda f: True))[0]
        assert frame["type"] == "error" and frame["payload"]["code"] == "UNAUTHENTICATED"
        with pytest.raises(ConnectionClosed):
            await sock.recv()
    assert sock.close_code == 4401 and user_id


# --- the new paths shadow nothing, and nothing shadows them -------------------------------------


def test_the_documents_paths_and_todays_stand_side_by_side(stack: Stack, script):
    api, project_id = script["api"], script["project_id"]
    # today's routes beside the documents' import path answer as before
    assert data(api.get(f"/api/datasets/{project_id}"))["images"] == 32
    assert api.get("/api/datasets/import").json()["error"]["code"] == "NOT_FOUND"
    folder = squares(stack.imports / uuid.uuid4().hex, 2, start=5000)
    body = {"project_id": project_id, "path": str(folder)}
    assert data(api.post("/api/datasets/import/local", json=body), 202)["task_id"]
    # today's field names on the documents' path are refused, naming the field
    wrong = api.post("/api/datasets/import", json=body)
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] in ("path", "source_path")
    # /api/v1 keeps naming images by id only
    name = api.get(f"/api/v1/datasets/{project_id}/image/tl_7.png")
    assert name.status_code == 404
    # a stranger learns nothing about a project's file names
    _, token = user(stack, "mallory")
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        for path in ("image/tl/tl_0.png", "image/tl/tl_7.png", "thumbnail/tl/none.png"):
            resp = c.get(f"/api/datasets/{project_id}/{path}")
            assert resp.status_code == 404, (path, resp.text)
            assert resp.json()["error"]["message"] == f"project {project_id} does not exist"


def test_a_raw_zip_body_on_the_documents_import_path_imports_too(script, tmp_path: Path):
    api, project_id = script["api"], script["project_id"]
    archive = zip_dir(squares(tmp_path / "set", 2, start=7000), tmp_path / "set.zip")
    params = {"project_id": project_id, "format": "folder"}
    headers = {"Content-Type": "application/zip"}
    job = data(
        api.post(
            "/api/datasets/import", params=params, content=archive.read_bytes(), headers=headers
        ),
        202,
    )
    task = settled(api, job["check_url"])
    assert task["status"] == "completed" and task["result"]["imported"] == 4, task
    refused = api.post(
        "/api/datasets/import", params={"format": "folder"}, content=b"PK", headers=headers
    )
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "project_id"

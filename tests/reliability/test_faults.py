"""Faults: services down, hung, killed and restarted; NATS restarted; read models deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the stack starts only these (and the gateway).
STACK_SERVICES = ("projects",)


def create(stack: Stack, name: str) -> dict:
    resp = httpx.post(
        f"{stack.base_url}/api/v1/projects",
        json={"name": name},
        headers=stack.headers(),
        timeout=15,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


def listing(stack: Stack) -> list[dict]:
    resp = httpx.get(
        f"{stack.base_url}/api/v1/projects",
        params={"status": "all"},
        headers=stack.headers(),
        timeout=15,
    )
    return resp.json()["data"]["items"]


def test_a_stopped_service_answers_503_after_a_bounded_wait_and_health_says_which(
    tmp_path: Path,
):
    # given a gateway that waits at most 1 s for a responder, and no projects service
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_REQUEST_TIMEOUT="1.5", STUDIO_RESPONDER_WAIT="1")
    try:
        stack.up()
        stack.stop("projects")
        # when a command is sent, then it is answered 503 once the wait is over, and says so
        resp = httpx.post(
            f"{stack.base_url}/api/v1/projects",
            json={"name": "x"},
            headers=stack.headers(),
            timeout=15,
        )
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "UNAVAILABLE"
        assert "waited 1s" in resp.json()["error"]["message"]
        health = httpx.get(f"{stack.base_url}/health", timeout=15)
        assert health.status_code == 503
        assert health.json()["data"]["services"]["projects"]["ok"] is False
        assert "projects" in health.json()["error"]["message"]
    finally:
        stack.down()


def test_a_service_restarted_while_a_command_waits_answers_it(tmp_path: Path):
    # given a gateway that waits for a responder long enough for a restart on a busy machine
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_RESPONDER_WAIT="60").up()
    try:
        # when the projects service is killed, and a supervisor starts it again a second later
        stack.kill("projects")
        restart = threading.Timer(1.0, stack.start, ("projects",))
        restart.start()
        # then a command sent meanwhile is not refused: it waits for the new process
        try:
            resp = httpx.post(
                f"{stack.base_url}/api/v1/projects",
                json={"name": "w"},
                headers=stack.headers(),
                timeout=90,
            )
        finally:
            restart.join()
        assert resp.status_code == 201, resp.text
        assert [p["id"] for p in listing(stack)] == [resp.json()["data"]["id"]]
    finally:
        stack.down()


def test_a_hung_service_answers_503_after_the_request_timeout(own_stack: Stack):
    # given a projects service that stops answering (SIGSTOP) with a 1.5 s request timeout
    stack = own_stack.up()
    stack.pause("projects")
    try:
        started = time.monotonic()
        resp = httpx.post(
            f"{stack.base_url}/api/v1/projects",
            json={"name": "x"},
            headers=stack.headers(),
            timeout=15,
        )
        elapsed = time.monotonic() - started
    finally:
        stack.resume("projects")
    # then the request ends with 503 rather than hanging
    assert resp.status_code == 503
    assert elapsed < 10


def test_killed_and_restarted_services_keep_every_project(own_stack: Stack):
    stack = own_stack.up()
    made = [create(stack, f"p{i}") for i in range(3)]
    for name in ("projects", "gateway"):
        stack.kill(name)
    stack.up()
    assert {p["id"] for p in listing(stack)} == {p["id"] for p in made}
    # and the restarted projects service still decides from the stored history
    resp = httpx.post(
        f"{stack.base_url}/api/v1/projects/{made[0]['id']}/archive",
        headers=stack.headers(),
        timeout=15,
    )
    assert resp.status_code == 200
    resp = httpx.post(
        f"{stack.base_url}/api/v1/projects/{made[0]['id']}/archive",
        headers=stack.headers(),
        timeout=15,
    )
    assert resp.status_code == 409


def test_nats_restarted_the_studio_reconnects_and_nothing_is_lost(own_stack: Stack):
    stack = own_stack.up()
    before = create(stack, "before")
    assert stack.nats is not None
    port = stack.nats.port
    stack.nats.stop()
    stack.start_nats(port)
    stack.wait_healthy()
    after = create(stack, "after")
    assert {p["id"] for p in listing(stack)} == {before["id"], after["id"]}


def test_a_deleted_read_model_is_rebuilt_identical(own_stack: Stack):
    stack = own_stack.up()
    for i in range(4):
        project = create(stack, f"p{i}")
    httpx.patch(
        f"{stack.base_url}/api/v1/projects/{project['id']}",
        json={"name": "renamed"},
        headers=stack.headers(),
        timeout=15,
    )
    before = listing(stack)
    # when the gateway is stopped and its read model deleted, then started again
    stack.stop("gateway")
    studio(stack, "rebuild", "gateway")
    assert not (stack.workspace / "gateway" / "readmodel.db").exists()
    stack.start("gateway")
    stack.wait_healthy()
    # then it replays the stream into the same model
    assert listing(stack) == before
    # and `studio rebuild` on the running gateway does the same in place
    out = studio(stack, "rebuild", "gateway")
    # four projects created (each with its creator's membership) and one renamed
    assert "rebuilt from" in out and "'PROJECTS': 9" in out
    assert listing(stack) == before


def studio(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args, "--workspace", str(stack.workspace)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_a_query_waits_for_its_restarting_service_too(tmp_path: Path):
    # given a studio whose datasets service is killed and started again a second later
    stack = Stack(tmp_path, ("projects", "datasets"), STUDIO_RESPONDER_WAIT="60").up()
    try:
        project = create(stack, "queried")
        stack.kill("datasets")
        restart = threading.Timer(1.0, stack.start, ("datasets",))
        restart.start()
        # when a client asks for the dataset's health meanwhile (a query, not a command)
        try:
            url = f"{stack.base_url}/api/v1/datasets/{project['id']}/health"
            resp = httpx.get(url, headers=stack.headers(), timeout=90)
        finally:
            restart.join()
        # then it is answered by the new process rather than refused with 503
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["images"] == 0
    finally:
        stack.down()


def test_a_starting_gateway_removes_uploads_a_crash_left_but_not_recent_ones(tmp_path: Path):
    # given uploads left in the workspace: one untouched for two hours, one just written
    uploads = tmp_path / "workspace" / "uploads"
    uploads.mkdir(parents=True)
    old, recent = uploads / "left-by-a-crash.zip", uploads / "another-gateways.zip"
    for path in (old, recent):
        path.write_bytes(b"PK\x05\x06" + bytes(18))
    then = time.time() - 2 * 3600
    os.utime(old, (then, then))
    # when the studio starts
    stack = Stack(tmp_path, ("projects",)).up()
    try:
        # then the crash's leftover is gone, and a file another gateway may be receiving stays
        assert not old.exists()
        assert recent.exists()
    finally:
        stack.down()

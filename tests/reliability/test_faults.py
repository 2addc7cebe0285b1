"""Faults: services down, hung, killed and restarted; NATS restarted; read models deleted.

One studio serves the module (``tests.fault_helpers``): each test breaks a part of it, and the
next finds it whole again; a test that needs other gateway settings (how long to wait for a
responder, for an answer) restarts the gateway alone with them. Each test makes its own
projects and compares what it lists with what the studio held before it broke something.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from contracts import projects as p
from tests.fault_helpers import (
    gateway_with,
    last_sequence,
    module_studio,
    start_gateway,
    whole_again,
)
from tests.stack import Stack

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the studio starts only these (and the gateway).
STACK_SERVICES = ("projects", "datasets")
#: The gateway's settings: a short request timeout (a hung service is seen quickly) and a wait
#: of a second for a responder (a stopped service is refused soon) ...
BOUNDED = {"STUDIO_REQUEST_TIMEOUT": "1.5", "STUDIO_RESPONDER_WAIT": "1"}
#: ... or a wait long enough for a restart on a busy machine. The tests that need it come last,
#: after the one that starts the gateway anyway, so that no test restarts it only for them.
PATIENT = {"STUDIO_RESPONDER_WAIT": "60"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with module_studio(tmp_path_factory.mktemp("faults"), STACK_SERVICES, BOUNDED) as s:
        yield s


@pytest.fixture
def stack(studio: Stack) -> Stack:
    """The module's studio, whole again: whatever the last test stopped, paused or killed runs."""
    whole_again(studio)
    return studio


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


def ids(projects: list[dict]) -> list[str]:
    """The projects' ids, sorted (a project listed twice would show twice)."""
    return sorted(project["id"] for project in projects)


def test_a_stopped_service_answers_503_after_a_bounded_wait_and_health_says_which(stack: Stack):
    # given a gateway that waits at most 1 s for a responder, and no projects service
    gateway_with(stack, BOUNDED)
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


def test_a_hung_service_answers_503_after_the_request_timeout(stack: Stack):
    # given a projects service that stops answering (SIGSTOP) with a 1.5 s request timeout
    gateway_with(stack, BOUNDED)
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


def test_killed_and_restarted_services_keep_every_project(stack: Stack):
    gateway_with(stack, BOUNDED)
    made = [create(stack, f"p{i}") for i in range(3)]
    before = ids(listing(stack))
    assert set(ids(made)) <= set(before)
    for name in ("projects", "gateway"):
        stack.kill(name)
    stack.up()
    assert ids(listing(stack)) == before
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


def test_nats_restarted_the_studio_reconnects_and_nothing_is_lost(stack: Stack):
    gateway_with(stack, BOUNDED)
    before = create(stack, "before")
    held = ids(listing(stack))
    assert before["id"] in held
    assert stack.nats is not None
    port = stack.nats.port
    stack.nats.stop()
    stack.start_nats(port)
    stack.wait_healthy()
    after = create(stack, "after")
    assert ids(listing(stack)) == sorted([*held, after["id"]])


def test_a_deleted_read_model_is_rebuilt_identical(stack: Stack):
    gateway_with(stack, BOUNDED)
    first = last_sequence(stack, p.STREAM)
    for i in range(4):
        project = create(stack, f"p{i}")
    httpx.patch(
        f"{stack.base_url}/api/v1/projects/{project['id']}",
        json={"name": "renamed"},
        headers=stack.headers(),
        timeout=15,
    )
    before = listing(stack)
    # four projects created (each with its creator's membership) and one renamed
    last = first + 9
    assert last_sequence(stack, p.STREAM) == last
    # when the gateway is stopped and its read model deleted, then started again
    stack.stop("gateway")
    cli(stack, "rebuild", "gateway")
    assert not (stack.workspace / "gateway" / "readmodel.db").exists()
    start_gateway(stack, BOUNDED)
    # then it replays the stream into the same model
    assert listing(stack) == before
    # and `studio rebuild` on the running gateway does the same in place
    out = cli(stack, "rebuild", "gateway")
    assert "rebuilt from" in out and f"'{p.STREAM}': {last}" in out
    assert listing(stack) == before


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args, "--workspace", str(stack.workspace)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_a_starting_gateway_removes_uploads_a_crash_left_but_not_recent_ones(stack: Stack):
    # given a stopped gateway, and uploads left in the workspace: one untouched for two hours,
    # one just written
    stack.stop("gateway")
    uploads = stack.workspace / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    old, recent = uploads / f"left-by-a-crash-{tag}.zip", uploads / f"another-gateways-{tag}.zip"
    for path in (old, recent):
        path.write_bytes(b"PK\x05\x06" + bytes(18))
    then = time.time() - 2 * 3600
    os.utime(old, (then, then))
    try:
        # when the gateway starts (with the settings the next tests need: any would do here)
        start_gateway(stack, PATIENT)
        # then the crash's leftover is gone, and a file another gateway may be receiving stays
        assert not old.exists()
        assert recent.exists()
    finally:
        recent.unlink(missing_ok=True)


def test_a_service_restarted_while_a_command_waits_answers_it(stack: Stack):
    # given a gateway that waits for a responder long enough for a restart on a busy machine
    gateway_with(stack, PATIENT)
    before = ids(listing(stack))
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
    assert ids(listing(stack)) == sorted([*before, resp.json()["data"]["id"]])


def test_a_query_waits_for_its_restarting_service_too(stack: Stack):
    # given a studio whose datasets service is killed and started again a second later
    gateway_with(stack, PATIENT)
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

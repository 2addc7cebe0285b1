"""The logs of a running studio: JSON lines, one access line per request, and one request
followed by its id from the gateway's access line to the service that handled its command."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from contracts import asyncapi
from tests.stack import API, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)
WAIT_S = 20.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A studio logging at INFO (the shared stacks log warnings only), its stderr in files."""
    s = Stack(tmp_path_factory.mktemp("stack"), STACK_SERVICES, STUDIO_LOG_LEVEL="INFO")
    try:
        yield s.up()
    finally:
        s.down()


def json_lines(stack: Stack, name: str) -> list[dict]:
    """Every line of a process's log, each of which must be one JSON object."""
    lines = []
    for number, text in enumerate(stack.log(name).splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            pytest.fail(f"{name}.log line {number} is not JSON: {text!r}")
    return lines


def wait_for_line(stack: Stack, name: str, match: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [line for line in json_lines(stack, name) if match(line)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no such line in {name}.log:\n{stack.log(name)[-3000:]}")
        time.sleep(0.1)


def test_one_request_is_followed_by_its_id_from_the_gateway_to_the_service(stack: Stack) -> None:
    # given a request with an id of its own
    request_id = f"logs-{uuid.uuid4().hex}"
    resp = httpx.post(
        f"{stack.base_url}{API}/projects",
        json={"name": f"logged {request_id}"},
        headers=stack.headers() | {"X-Request-ID": request_id},
        timeout=15,
    )
    assert resp.status_code == 201, resp.text
    # then the gateway writes one access line for it, with the route template and the outcome
    access = wait_for_line(
        stack,
        "gateway",
        lambda x: x.get("request_id") == request_id and x["logger"] == "studio.access",
    )
    assert access["service"] == "gateway" and access["level"] == "INFO"
    assert (access["method"], access["route"], access["path"]) == (
        "POST",
        f"{API}/projects",
        f"{API}/projects",
    )
    assert access["status"] == 201 and access["duration_ms"] > 0
    assert access["client"] == "127.0.0.1"
    assert access["message"].startswith(f"POST {API}/projects 201 ")
    access_lines = [
        x
        for x in json_lines(stack, "gateway")
        if x.get("request_id") == request_id and x["logger"] == "studio.access"
    ]
    assert len(access_lines) == 1
    # and the projects service's line of the command it handled carries the same request id
    handled = wait_for_line(stack, "projects", lambda x: x.get("request_id") == request_id)
    assert handled["service"] == "projects"
    assert handled["message"].startswith("CreateProject accepted in ")
    assert handled["outcome"] == "accepted"


def test_a_route_with_ids_is_logged_by_its_template(stack: Stack) -> None:
    request_id = f"logs-{uuid.uuid4().hex}"
    resp = httpx.get(
        f"{stack.base_url}{API}/projects/no-such-project",
        headers=stack.headers() | {"X-Request-ID": request_id},
        timeout=15,
    )
    assert resp.status_code == 404
    line = wait_for_line(stack, "gateway", lambda x: x.get("request_id") == request_id)
    assert line["route"] == f"{API}/projects/{{project_id}}"
    assert line["path"] == f"{API}/projects/no-such-project" and line["status"] == 404


def test_every_line_of_every_process_is_json_with_its_service(stack: Stack) -> None:
    # uvicorn's own lines included: they go through the studio's format too
    for name in ("gateway", "identity", "projects"):
        lines = json_lines(stack, name)
        assert lines, f"{name} logged nothing at INFO"
        assert {line["service"] for line in lines} == {name}
    assert any(line["logger"].startswith("uvicorn") for line in json_lines(stack, "gateway"))


def test_the_served_asyncapi_document_is_the_generated_one(stack: Stack) -> None:
    resp = httpx.get(f"{stack.base_url}/asyncapi.json", timeout=15)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == json.loads(json.dumps(asyncapi.document()))
    page = httpx.get(f"{stack.base_url}/asyncapi", timeout=15)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "cmd.projects.create_project" in page.text

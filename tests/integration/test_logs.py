"""The logs of a running studio: JSON lines, one access line per request, and one request
followed by its id and its trace from the gateway's access line to the service that handled its
command. The studio exports its spans (to a local sink that accepts and drops them), as a
deployment with tracing does, so that its lines carry trace ids."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from contracts import asyncapi
from tests.stack import API, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)
WAIT_S = 20.0


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def otlp() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: str) -> Iterator[Stack]:
    """A studio logging at INFO (the shared stacks log warnings only), its stderr in files,
    its spans exported."""
    root = tmp_path_factory.mktemp("stack")
    env = {"STUDIO_LOG_LEVEL": "INFO", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
    s = Stack(root, STACK_SERVICES, **env)
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
    # and both lines are in one trace, each in its own process's span
    assert len(access["trace_id"]) == 32 and handled["trace_id"] == access["trace_id"]
    assert len(handled["span_id"]) == 16 and handled["span_id"] != access["span_id"]


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

"""The gateway's access log and its 500s, in the studio's JSON log format: the app in process,
no NATS (the routes used here need none)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from services.gateway.app import create_app
from services.kernel.logs import setup_logging
from services.kernel.settings import Settings


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    out = io.StringIO()
    setup_logging("gateway", "info", "json", stream=out)
    yield out
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO, request_id: str) -> list[dict]:
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    return [line for line in parsed if line.get("request_id") == request_id]


async def test_a_500_logs_one_traceback_and_one_access_line_with_the_request_id(
    logs: io.StringIO,
) -> None:
    # given the gateway with a route that fails unexpectedly (a bug)
    app = create_app(Settings())

    async def broken(item_id: str) -> None:
        raise RuntimeError(f"a bug about {item_id}")

    app.add_api_route("/api/v1/broken/{item_id}", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        # when a client calls it with its own request id
        resp = await client.get("/api/v1/broken/7?secret=s3", headers={"X-Request-ID": "req-500"})
    assert resp.status_code == 500
    # then exactly two lines name the request: its access line, and its traceback
    access, error = sorted(lines(logs, "req-500"), key=lambda line: "exc_info" in line)
    assert error["level"] == "ERROR" and "req-500" in error["message"]
    assert error["exc_info"].startswith("Traceback (most recent call last):")
    assert error["exc_info"].endswith("RuntimeError: a bug about 7")
    assert access["logger"] == "studio.access" and access["level"] == "INFO"
    assert access["status"] == 500 and access["method"] == "GET"
    assert access["route"] == "/api/v1/broken/{item_id}"
    # the path without its query string, which may carry a secret
    assert access["path"] == "/api/v1/broken/7" and "s3" not in json.dumps(access)
    assert access["duration_ms"] >= 0 and "exc_info" not in access
    # and no other line carries a traceback
    assert sum("Traceback" in line for line in logs.getvalue().splitlines()) == 1


async def test_every_request_gets_one_access_line_whatever_its_answer(logs: io.StringIO) -> None:
    app = create_app(Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        unknown = await client.get("/api/v1/no-such-route", headers={"X-Request-ID": "req-404"})
        unauth = await client.get("/api/v1/projects", headers={"X-Request-ID": "req-401"})
    assert (unknown.status_code, unauth.status_code) == (404, 401)
    (missing,) = lines(logs, "req-404")
    assert (missing["route"], missing["status"]) == ("unmatched", 404)
    (refused,) = lines(logs, "req-401")
    assert (refused["route"], refused["status"]) == ("/api/v1/projects", 401)
    assert refused["message"].startswith("GET /api/v1/projects 401 ")

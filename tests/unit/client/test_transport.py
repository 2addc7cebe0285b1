"""The client's transport against ``httpx.MockTransport``: the envelope's errors become typed
exceptions, passing refusals are retried with the same Idempotency-Key, a POST the gateway would
run twice is not retried once it may have reached it, an expired session is refreshed once."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from studio_client import (
    AsyncStudioClient,
    Conflict,
    NotFound,
    RateLimited,
    RetryPolicy,
    StudioClient,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from studio_client.transport import api_root

PROJECT = {"id": "p1", "name": "cats", "status": "active", "version": 1}
FAST = RetryPolicy(attempts=4, backoff=0.001, max_backoff=0.002, max_retry_after=0.01)
Handler = Callable[[httpx.Request], httpx.Response]


def envelope(data: object, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"status": "ok", "data": data}, headers=headers)


def refusal(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    error = {"code": code, "message": message} | ({"field": field} if field else {})
    body = {"status": "error", "error": error, "request_id": "req-42"}
    return httpx.Response(status, json=body, headers={"X-Request-ID": "req-42"})


def client(handler: Handler) -> StudioClient:
    transport = httpx.MockTransport(handler)
    return StudioClient("http://studio.test", token="t", retry=FAST, transport=transport)


def test_a_create_retried_on_503_sends_the_same_idempotency_key_each_time():
    # given a gateway that answers 503 twice, then creates the project
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return (
            refusal(503, "UNAVAILABLE", "NATS is restarting")
            if len(seen) < 3
            else envelope(PROJECT, 201)
        )

    # when a project is created
    with client(handler) as studio:
        project = studio.projects.create("cats")

    # then it was tried three times with one key, and the typed project came back
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1 and all(keys)
    assert project.id == "p1" and project.name == "cats"
    assert all(json.loads(r.content) == json.loads(seen[0].content) for r in seen)


def test_two_calls_send_two_keys():
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return envelope(PROJECT, 201)

    with client(handler) as studio:
        studio.projects.create("a")
        studio.projects.create("b")
    assert len(set(keys)) == 2


def test_a_lost_connection_is_retried_for_a_keyed_post_and_a_read():
    # given a gateway whose connection breaks once mid-request
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) in (1, 3):
            raise httpx.ReadError("connection reset", request=request)
        return envelope(PROJECT, 201 if request.method == "POST" else 200)

    with client(handler) as studio:
        assert studio.projects.create("cats").id == "p1"
        assert studio.projects.get("p1").id == "p1"
    assert calls == ["POST", "POST", "GET", "GET"]


def test_a_run_is_retried_after_a_503_or_a_broken_connection_under_one_key():
    # given a gateway that keeps a job's 202 under its Idempotency-Key: a retry gets the first
    # run, so a run may be sent again whatever happened to the first try
    run = {"id": "r1", "project_id": "p1", "split_id": "s1", "status": "queued", "position": 1}
    for failure in ("503", "read"):
        calls: list[httpx.Request] = []

        def handler(
            request: httpx.Request, failure: str = failure, calls: list[httpx.Request] = calls
        ) -> httpx.Response:
            calls.append(request)
            if len(calls) == 1 and failure == "read":
                raise httpx.ReadError("reset", request=request)
            if len(calls) == 1:
                return refusal(503, "UNAVAILABLE", "try again")
            return envelope(run, 202)

        with client(handler) as studio:
            assert studio.runs.create("p1", "s1", model="smallcnn").id == "r1"
        keys = {c.headers["Idempotency-Key"] for c in calls}
        assert len(calls) == 2 and len(keys) == 1, failure


def test_a_stop_is_not_resent_after_a_broken_connection():
    # given a gateway that does not keep a stop's answer: a second stop could stop a resumed run
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadError("reset", request=request)

    with client(handler) as studio, pytest.raises(Unavailable):
        studio.runs.stop("r1")
    assert len(calls) == 1


def test_a_refused_connection_is_retried_even_for_a_run():
    # given a gateway not listening for a moment: nothing can have reached it
    calls: list[httpx.Request] = []
    run = {"id": "r1", "project_id": "p1", "split_id": "s1", "status": "queued", "position": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return envelope(run, 202)

    with client(handler) as studio:
        queued = studio.runs.create("p1", "s1", model="smallcnn", epochs=2)
    assert len(calls) == 2 and queued.status == "queued" and queued.position == 1
    assert json.loads(calls[1].content)["hyperparameters"] == {"model": "smallcnn", "epochs": 2}


async def test_429_waits_as_long_as_retry_after_says(monkeypatch: pytest.MonkeyPatch):
    # given a rate limiter that asks for 7 s (the policy caps waits at 10 ms in this test)
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("studio_client.transport.asyncio.sleep", no_sleep)
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), envelope(PROJECT)])
    policy = RetryPolicy(attempts=3, max_retry_after=30)
    transport = httpx.MockTransport(lambda request: next(answers))
    async with AsyncStudioClient("http://s", token="t", retry=policy, transport=transport) as s:
        assert (await s.projects.get("p1")).id == "p1"
    assert waits == [7.0]


def test_a_429_that_persists_is_raised_as_rate_limited_with_its_wait():
    def handler(request: httpx.Request) -> httpx.Response:
        answer = refusal(429, "RATE_LIMITED", "slow down")
        answer.headers["Retry-After"] = "0"
        return answer

    with client(handler) as studio, pytest.raises(RateLimited) as raised:
        studio.projects.list()
    assert raised.value.retry_after == 0 and raised.value.code == "RATE_LIMITED"


def test_errors_carry_code_message_field_and_request_id():
    answers = {
        "/api/v1/projects/gone": refusal(404, "NOT_FOUND", "project gone does not exist"),
        "/api/v1/splits": refusal(422, "VALIDATION_ERROR", "name: too short", "name"),
        "/api/v1/projects/p1/archive": refusal(409, "CONFLICT", "version moved on"),
    }
    with client(lambda request: answers[request.url.path]) as studio:
        with pytest.raises(NotFound) as missing:
            studio.projects.get("gone")
        with pytest.raises(ValidationFailed) as invalid:
            studio.splits.create("p1", "")
        with pytest.raises(Conflict):
            studio.projects.archive("p1")
    assert missing.value.status == 404 and missing.value.request_id == "req-42"
    assert missing.value.message == "project gone does not exist"
    assert invalid.value.field == "name" and invalid.value.code == "VALIDATION_ERROR"
    assert "req-42" in str(invalid.value) and "[name]" in str(invalid.value)


def test_an_answer_without_the_envelope_is_still_a_typed_error():
    bad_gateway = httpx.Response(502, text="<html>bad gateway</html>")
    with client(lambda r: bad_gateway) as studio, pytest.raises(Unavailable) as raised:
        studio.projects.get("p1")
    assert raised.value.code == "HTTP_502" and raised.value.status == 502


def test_an_expired_session_is_refreshed_once_and_the_call_repeated():
    tokens = {"access_token": "a1", "refresh_token": "r1", "expires_in": 900}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/auth/token"):
            return httpx.Response(200, json=tokens | {"status": "ok", "data": tokens})
        if path.endswith("/auth/refresh"):
            assert json.loads(request.content) == {"refresh_token": "r1"}
            fresh = {"access_token": "a2", "refresh_token": "r2", "expires_in": 900}
            return httpx.Response(200, json=fresh | {"status": "ok", "data": fresh})
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer a1":
            return refusal(401, "UNAUTHENTICATED", "expired")
        return envelope(PROJECT)

    with StudioClient("http://s", transport=httpx.MockTransport(handler), retry=FAST) as studio:
        studio.auth.login("admin", "pw")
        assert studio.projects.get("p1").id == "p1"
    assert seen == ["Bearer a1", "Bearer a2"]


def test_an_api_key_is_sent_as_x_api_key_and_urls_take_any_root():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope({"items": [PROJECT], "total": 1, "limit": 50, "offset": 0})

    for base in ("http://s", "http://s/", "http://s/api", "http://s/api/v1/"):
        assert api_root(base) == "http://s/api/v1"
    with StudioClient("http://s/api", api_key="sk_x", transport=httpx.MockTransport(handler)) as s:
        page = s.projects.list(q="ca")
    assert page.total == 1 and page.items[0].name == "cats"
    assert seen[0].headers["X-API-Key"] == "sk_x" and "Authorization" not in seen[0].headers
    assert str(seen[0].url) == "http://s/api/v1/projects?status=active&q=ca&limit=50&offset=0"


def test_a_refresh_the_studio_could_not_answer_keeps_the_session_a_refused_one_drops_it():
    tokens = {"access_token": "a1", "refresh_token": "r1", "expires_in": 900}
    refreshes = iter([refusal(503, "UNAVAILABLE", "busy"), refusal(401, "UNAUTHENTICATED", "no")])
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/token"):
            return httpx.Response(200, json=tokens | {"status": "ok", "data": tokens})
        if request.url.path.endswith("/auth/refresh"):
            calls.append("refresh")
            return next(refreshes)
        calls.append("get")
        return refusal(401, "UNAUTHENTICATED", "expired")

    with StudioClient("http://s", transport=httpx.MockTransport(handler), retry=FAST) as studio:
        studio.auth.login("admin", "pw")
        with pytest.raises(Unauthorized):
            studio.projects.get("p1")
        assert studio.transport.session is not None  # a passing failure: try again later
        with pytest.raises(Unauthorized):
            studio.projects.get("p1")
        assert studio.transport.session is None  # refused: the session is over
        with pytest.raises(Unauthorized):
            studio.projects.get("p1")
    assert calls == ["get", "refresh", "get", "refresh", "get"]

"""Projects over REST against the running studio: nats-server, projects service and gateway."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import nats
import pytest

from contracts import projects as c
from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.stack import Stack

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the stack starts only these (and the gateway).
STACK_SERVICES = ("projects",)


async def create(api: httpx.AsyncClient, name: str | None = None, **body: str) -> dict:
    resp = await api.post("/api/v1/projects", json={"name": name or uuid.uuid4().hex, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


def error_of(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["request_id"] == resp.headers["x-request-id"]
    return body["error"]


async def test_create_stores_an_event_with_its_headers_and_get_reads_it_back(api, stack):
    # given a client with its own request id and trace
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"X-Request-ID": "req-123", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    # when it creates a project
    resp = await api.post(
        "/api/v1/projects",
        json={"name": "  Cats and dogs ", "description": "pets"},
        headers=headers,
    )
    # then it gets the project at once (read-your-writes), with where it lives and its version
    assert resp.status_code == 201, resp.text
    assert resp.headers["x-request-id"] == "req-123"
    project = resp.json()["data"]
    assert project["name"] == "Cats and dogs"
    assert project["status"] == "active"
    assert resp.headers["location"].endswith(f"/api/v1/projects/{project['id']}")
    assert resp.headers["etag"] == f'"{project["version"]}"'
    # and its version counts its events: a new project is at version 2 (created, and its
    # creator added as its first owner)
    assert project["version"] == 2
    # and the event is in the stream, on the project's subject, with its headers
    nc = await nats.connect(stack.nats_url)
    try:
        msg = await nc.jetstream().get_last_msg(c.STREAM, f"evt.projects.{project['id']}")
    finally:
        await nc.close()
    assert msg.subject == f"evt.projects.{project['id']}"
    assert msg.headers["Studio-Event-Type"] == "projects.member_added.v1"
    assert msg.headers["Studio-Correlation-Id"] == "req-123"
    assert msg.headers["Nats-Msg-Id"]
    assert msg.headers["traceparent"].split("-")[1] == trace_id
    # and GET (and the /api alias) read it back
    for prefix in ("/api/v1", "/api"):
        got = await api.get(f"{prefix}/projects/{project['id']}")
        assert got.status_code == 200
        assert got.json()["data"] == project


async def test_a_request_without_an_id_gets_one(api):
    resp = await api.get("/api/v1/projects")
    assert len(resp.headers["x-request-id"]) >= 16
    resp = await api.get("/api/v1/projects", headers={"X-Request-ID": "bad id with spaces"})
    assert resp.headers["x-request-id"] != "bad id with spaces"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "a\nb"}, "name"),
        ({}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "task_type": "segmentation"}, "task_type"),
        ({"name": "ok", "description": "d" * 5001}, "description"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
async def test_invalid_creates_get_422_naming_the_field_and_store_nothing(api, body, field):
    before = (await api.get("/api/v1/projects", params={"status": "all"})).json()["data"]["total"]
    err = error_of(await api.post("/api/v1/projects", json=body), 422, "VALIDATION_ERROR")
    assert err["field"] == field
    after = (await api.get("/api/v1/projects", params={"status": "all"})).json()["data"]["total"]
    assert after == before


async def test_a_detection_project_is_made_and_keeps_its_task_type(api):
    reply = await api.post("/api/v1/projects", json={"name": "boxes", "task_type": "detection"})
    assert reply.status_code == 201, reply.text
    pid = reply.json()["data"]["id"]
    assert (await api.get(f"/api/v1/projects/{pid}")).json()["data"]["task_type"] == "detection"


async def test_a_name_of_200_characters_is_fine(api):
    assert (await create(api, "n" * 200))["name"] == "n" * 200


async def test_a_body_that_is_not_json_gets_422(api):
    resp = await api.post(
        "/api/v1/projects", content=b"{not json", headers={"content-type": "application/json"}
    )
    error_of(resp, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("pid", ["0" * 32, "a.b", "nope*"])
async def test_unknown_ids_get_404(api, pid):
    error_of(await api.get(f"/api/v1/projects/{pid}"), 404, "NOT_FOUND")
    error_of(await api.patch(f"/api/v1/projects/{pid}", json={"name": "x"}), 404, "NOT_FOUND")
    error_of(await api.post(f"/api/v1/projects/{pid}/archive"), 404, "NOT_FOUND")
    error_of(await api.get(f"/api/v1/projects/{pid}/events"), 404, "NOT_FOUND")


async def test_unknown_routes_and_methods_answer_the_envelope(api):
    error_of(await api.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    error_of(await api.delete("/api/v1/projects"), 405, "METHOD_NOT_ALLOWED")


async def test_patch_renames_and_redescribes_in_one_step(api):
    project = await create(api, "before")
    resp = await api.patch(
        f"/api/v1/projects/{project['id']}", json={"name": "after", "description": "new"}
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data["name"], data["description"]) == ("after", "new")
    assert data["version"] > project["version"]
    error_of(await api.patch(f"/api/v1/projects/{project['id']}", json={}), 422, "VALIDATION_ERROR")


async def test_patch_with_a_stale_if_match_gets_409_and_changes_nothing(api):
    project = await create(api)
    pid, v1 = project["id"], project["version"]
    ok = await api.patch(
        f"/api/v1/projects/{pid}", json={"name": "one"}, headers={"If-Match": f'"{v1}"'}
    )
    assert ok.status_code == 200
    # the version counts the project's events: one rename later it is one higher, whatever
    # else the stream holds (other projects' events do not move it)
    await create(api, "a neighbour")
    assert ok.json()["data"]["version"] == v1 + 1 == 3
    assert ok.headers["etag"] == '"3"'
    assert (await api.get(f"/api/v1/projects/{pid}")).headers["etag"] == '"3"'
    stale = await api.patch(
        f"/api/v1/projects/{pid}", json={"name": "two"}, headers={"If-Match": f'"{v1}"'}
    )
    error_of(stale, 409, "CONFLICT")
    assert (await api.get(f"/api/v1/projects/{pid}")).json()["data"]["name"] == "one"
    bad = await api.patch(f"/api/v1/projects/{pid}", json={"name": "x"}, headers={"If-Match": "v1"})
    assert error_of(bad, 422, "VALIDATION_ERROR")["field"] == "If-Match"


async def test_two_concurrent_renames_from_one_version_exactly_one_wins(api):
    # given a project at version v, when two clients rename it from v at the same time, often
    for _ in range(5):
        project = await create(api)
        pid, tag = project["id"], f'"{project["version"]}"'
        first, second = await asyncio.gather(
            api.patch(f"/api/v1/projects/{pid}", json={"name": "A"}, headers={"If-Match": tag}),
            api.patch(f"/api/v1/projects/{pid}", json={"name": "B"}, headers={"If-Match": tag}),
        )
        # then exactly one wins and the other gets a conflict; the winner's name stays
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        winner = first if first.status_code == 200 else second
        final = (await api.get(f"/api/v1/projects/{pid}")).json()["data"]
        assert final["name"] == winner.json()["data"]["name"]


async def test_a_retried_create_with_an_idempotency_key_makes_one_project(api, stack):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"name": "once", "description": "only"}
    # when the same create is sent three times, two of them at once
    first, second = await asyncio.gather(
        api.post("/api/v1/projects", json=body, headers=key),
        api.post("/api/v1/projects", json=body, headers=key),
    )
    third = await api.post("/api/v1/projects", json=body, headers=key)
    # then every answer names one project, and the stream holds one creation (and first owner)
    answers = [r for r in (first, second, third) if r.status_code == 201]
    assert third.status_code == 201
    assert third.headers["idempotent-replayed"] == "true"
    assert {r.json()["data"]["id"] for r in answers} == {third.json()["data"]["id"]}
    for r in (first, second):
        assert r.status_code in (201, 409), r.text  # 409: the twin was still running
    pid = third.json()["data"]["id"]
    nc = await nats.connect(stack.nats_url)
    try:
        info = await nc.jetstream().stream_info(c.STREAM, subjects_filter=c.event_subject(pid))
    finally:
        await nc.close()
    assert info.state.subjects == {c.event_subject(pid): 2}
    # and the same key with another body is refused
    other = await api.post("/api/v1/projects", json={"name": "other"}, headers=key)
    assert error_of(other, 422, "VALIDATION_ERROR")["field"] == "Idempotency-Key"


async def test_archive_and_restore(api):
    project = await create(api)
    pid = project["id"]
    archived = await api.post(f"/api/v1/projects/{pid}/archive")
    assert archived.json()["data"]["status"] == "archived"
    error_of(await api.post(f"/api/v1/projects/{pid}/archive"), 409, "CONFLICT")
    error_of(await api.patch(f"/api/v1/projects/{pid}", json={"name": "x"}), 409, "CONFLICT")
    listed = (await api.get("/api/v1/projects", params={"status": "archived"})).json()["data"]
    assert pid in [p["id"] for p in listed["items"]]
    restored = await api.post(f"/api/v1/projects/{pid}/restore")
    assert restored.json()["data"]["status"] == "active"
    error_of(await api.post(f"/api/v1/projects/{pid}/restore"), 409, "CONFLICT")


async def test_list_pages_filters_and_sorts(api):
    tag = uuid.uuid4().hex[:8]
    names = [f"{tag}-{i}" for i in range(5)]
    for name in names:
        await create(api, name)
    page = (
        await api.get(
            "/api/v1/projects", params={"q": tag, "limit": 2, "offset": 1, "sort": "name"}
        )
    ).json()["data"]
    assert page["total"] == 5
    assert [p["name"] for p in page["items"]] == names[1:3]
    newest = (await api.get("/api/v1/projects", params={"q": tag})).json()["data"]["items"]
    assert [p["name"] for p in newest] == names[::-1]
    wildcard = (await api.get("/api/v1/projects", params={"q": "%"})).json()["data"]
    assert all("%" in p["name"] for p in wildcard["items"])
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "gone"}, {"sort": "x"}):
        error_of(await api.get("/api/v1/projects", params=bad), 422, "VALIDATION_ERROR")


async def test_get_answers_304_for_the_current_etag(api):
    project = await create(api)
    resp = await api.get(f"/api/v1/projects/{project['id']}")
    again = await api.get(
        f"/api/v1/projects/{project['id']}", headers={"If-None-Match": resp.headers["etag"]}
    )
    assert again.status_code == 304


async def read_sse(lines: AsyncIterator[str], count: int) -> list[dict[str, str]]:
    """The next ``count`` events of an open SSE response's lines, as {id, event, data}."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "event" in current:
                events.append(current)
                if len(events) == count:
                    return events
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return events


async def test_sse_streams_history_then_live_events_and_resumes_after_last_event_id(api):
    project = await create(api, "streamed")
    pid = project["id"]
    url = f"/api/v1/projects/{pid}/events"
    async with api.stream("GET", url) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.aiter_lines()
        first = await read_sse(lines, 2)  # created, and its creator added as owner
        await api.patch(f"/api/v1/projects/{pid}", json={"name": "live"})
        live = await asyncio.wait_for(read_sse(lines, 1), 10)
    assert [e["event"] for e in first] == ["project_created", "member_added"]
    assert int(first[0]["id"]) >= 1  # a stream sequence: opaque, only sent back
    assert live[0]["event"] == "project_renamed"
    assert '"name":"live"' in live[0]["data"]
    # a client that saw the creation reconnects: it gets exactly what it missed
    await api.post(f"/api/v1/projects/{pid}/archive")
    async with api.stream("GET", url, headers={"Last-Event-ID": first[1]["id"]}) as resp:
        missed = await asyncio.wait_for(read_sse(resp.aiter_lines(), 2), 10)
    assert [e["event"] for e in missed] == ["project_renamed", "project_archived"]
    assert missed[0]["id"] == live[0]["id"]
    bad = await api.get(url, headers={"Last-Event-ID": "yesterday"})
    error_of(bad, 422, "VALIDATION_ERROR")


async def test_health_reports_nats_services_and_the_read_model(api):
    resp = await api.get("/health")
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data["nats"]["ok"] is True
    assert data["services"]["projects"]["ok"] is True
    assert data["read_model"][c.STREAM]["lag"] >= 0
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(data["services"]["projects"]["metrics_url"])).text
    assert "studio_commands_total" in metrics


async def test_metrics_and_openapi(api):
    await api.get("/api/v1/projects")
    # Labelled by the whole route template, not the router's own path. A request is counted
    # once its handler has wholly finished (its session closed), which may be just after its
    # answer reached us.
    metrics = ""
    for _ in range(100):
        metrics = (await api.get("/metrics")).text
        if 'route="/api/v1/projects"' in metrics:
            break
        await asyncio.sleep(0.05)
    assert "studio_http_requests_total" in metrics
    assert 'route="/api/v1/projects"' in metrics, sorted(set(re.findall(r'route="[^"]*"', metrics)))
    spec = (await api.get("/openapi.json")).json()
    assert "/api/v1/projects" in spec["paths"]
    assert "/api/v1/projects/{project_id}/events" in spec["paths"]


def test_stack_fixture_runs_each_service_as_its_own_process(stack: Stack):
    assert {"projects", "gateway"} <= set(stack.procs)
    assert all(p.poll() is None for p in stack.procs.values())


MALFORMED_IDS = ["é", "a b", "a%0Ab", "a" * 129, "a:b", "%F0%9F%90%88"]


@pytest.mark.parametrize("pid", MALFORMED_IDS)
async def test_a_malformed_path_id_is_404_and_never_reaches_the_service(api, stack: Stack, pid):
    # given an id no aggregate can have (non-ASCII, spaces, a newline, too long)
    url = f"/api/v1/projects/{pid}"
    # when a client reads or changes it, then it does not exist
    error_of(await api.get(url), 404, "NOT_FOUND")
    error_of(await api.patch(url, json={"name": "x"}), 404, "NOT_FOUND")
    error_of(await api.post(f"{url}/archive"), 404, "NOT_FOUND")
    error_of(await api.post(f"{url}/restore"), 404, "NOT_FOUND")
    # and the service never saw it
    assert "invalid aggregate id" not in stack.log("projects")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"offset": 10**40}, "offset"),
        ({"offset": 10**9 + 1}, "offset"),
        ({"offset": -1}, "offset"),
        ({"limit": 10**40}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_paging_out_of_bounds_gets_422_not_an_overflow(api, params, field):
    # a 40-digit offset used to reach SQLite and answer 500 (OverflowError)
    err = error_of(await api.get("/api/v1/projects", params=params), 422, "VALIDATION_ERROR")
    assert err["field"] == field


async def test_the_furthest_page_is_empty_not_an_error(api):
    resp = await api.get("/api/v1/projects", params={"offset": 10**9, "limit": 500})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["items"] == []


@pytest.mark.parametrize("tag", [b'"\xb2"', b'"' + b"9" * 30 + b'"', b'W/"1e3"'])
async def test_an_if_match_that_is_no_version_gets_422(api, tag):
    # "²" is a digit to str.isdigit but not to int(): it used to answer 500
    pid = (await create(api))["id"]
    resp = await api.patch(f"/api/v1/projects/{pid}", json={"name": "x"}, headers={"If-Match": tag})
    assert error_of(resp, 422, "VALIDATION_ERROR")["field"] == "If-Match"


async def test_a_500_carries_its_request_id_in_header_body_and_log(caplog):
    # given the gateway app with a route that fails unexpectedly (a bug)
    app = create_app(Settings())

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        # when a client with its own request id calls it, and one without
        given = await client.get("/api/v1/broken", headers={"X-Request-ID": "req-500"})
        made = await client.get("/api/v1/broken")
    # then both get the 500 envelope with the request id in header and body
    body = error_of(given, 500, "INTERNAL")
    assert given.headers["x-request-id"] == "req-500"
    assert "req-500" in body["message"]
    error_of(made, 500, "INTERNAL")
    assert len(made.headers["x-request-id"]) >= 16
    # and the traceback is logged with the request id
    logged = [r for r in caplog.records if r.exc_info and "req-500" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info[0] is RuntimeError
    assert getattr(logged[0], "request_id", None) == "req-500"


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Last-Event-ID": b"\xb2"}, {}),  # "²": a digit to str.isdigit, not to int()
        ({}, {"last_event_id": "²"}),
        ({"Last-Event-ID": "9" * 5000}, {}),  # past int()'s 4,300 digits
        ({"Last-Event-ID": "9" * 30}, {}),  # past any stream sequence
    ],
)
async def test_a_last_event_id_that_is_no_sequence_gets_422(api, headers, params):
    pid = (await create(api))["id"]
    resp = await api.get(f"/api/v1/projects/{pid}/events", headers=headers, params=params)
    error_of(resp, 422, "VALIDATION_ERROR")

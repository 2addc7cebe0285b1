"""Isolation between users, tried on every route the gateway has, read from its own route table.

Two users each own a project with images, a split, a trained run, an evaluation, an export and
an API key. Every operation of the OpenAPI schema is called by one user with the other's ids
(in its path, its JSON body and its id query parameters): each answers 404 ``NOT_FOUND`` worded
as for an unknown id, and no answer of any call, whatever its ids, is a 2xx holding the other
user's data. A viewer member gets 403 on every route that changes something. WebSocket routes
come from the app's routes. A route added later is covered without anyone remembering to; a
path parameter this test cannot fill fails it, rather than leaving the route untried.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.access_helpers import World, as_user, ok, user, world
from tests.stack import Stack
from tests.training_helpers import API, FAST

pytestmark = pytest.mark.integration

APP = create_app(Settings.from_env())
OPENAPI = APP.openapi()
#: Path parameters that name something of a project: another user's is 404.
PROJECT_IDS = {
    "project_id",
    "import_id",
    "image_id",
    "split_id",
    "run_id",
    "experiment_id",
    "evaluation_id",
    "export_id",
    "task_id",
}
#: Path parameters that name something of a user (their account, their keys).
USER_IDS = {"user_id", "key_id"}
#: Path parameters that are no id but a number inside what an id names (a search's trial).
NUMBERS = {"trial": "0"}
#: Body and query fields that name something of a project.
CARRIED = {"project_id", "run_id", "split_id", "run_ids"}
#: Operations that are not GET yet change nothing: a viewer may call them.
READS = {("post", "/api/v1/export/{export_id}/predict")}
#: Seconds a call may take; a refused one answers at once.
TIMEOUT = 30


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method, path, op))
    return found


def websocket_paths() -> list[str]:
    """Every WebSocket route of the app, included routers' too."""
    found = []
    for route in APP.routes:
        # An included router holds its routes (FastAPI builds them lazily).
        contexts = getattr(route, "effective_route_contexts", lambda r=route: [r])()
        for context in contexts:
            route_of = getattr(context, "starlette_route", None) or context
            if isinstance(route_of, WebSocketRoute):
                found.append(route_of.path)
    return found


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def example(schema: dict[str, Any], ids: dict[str, str], name: str = "") -> Any:
    """A value the schema accepts; a field named like an id gets ``ids``' id."""
    if name in ids:
        return ids[name]
    schema = _resolve(schema)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if _resolve(s).get("type") != "null"]
        return example(options[0], ids, name)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        # Every field: some bodies need one of several optional ones.
        return {k: example(v, ids, k) for k, v in schema.get("properties", {}).items()}
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        low, high = schema.get("minimum", 0.0), schema.get("maximum", 1.0)
        return (low + high) / 2
    if kind == "boolean":
        return False
    if kind == "array":
        return [example(schema.get("items", {}), ids)]
    if schema.get("format") == "date-time":
        return datetime.now(UTC).isoformat()
    return "ab12" + "x" * max(0, int(schema.get("minLength", 0)) - 4)


def request_of(path: str, op: dict[str, Any], ids: dict[str, str]) -> tuple[str, dict, Any]:
    """The URL, query and JSON body of ``op`` with ``ids`` in every id it takes."""
    params = op.get("parameters", [])
    for p in params:
        if p["in"] == "path":
            value = ids.get(p["name"], NUMBERS.get(p["name"]))
            assert value is not None, f"{path}: no id for {p['name']!r}: add it to World"
            path = path.replace("{" + p["name"] + "}", value)
    query = {}
    for p in params:
        if p["in"] == "query" and (p["name"] in ids or p["name"] in CARRIED):
            query[p["name"]] = ids.get(p["name"]) or ",".join([ids["run_id"]] * 2)
        elif p["in"] == "query" and p.get("required"):
            query[p["name"]] = example(p["schema"], ids, p["name"])
    body = None
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = example(content["application/json"]["schema"], ids)
    return path, query, body


def carries(op: dict[str, Any], body: Any) -> set[str]:
    """The names of the project ids a call of ``op`` carries (path, query, body)."""
    named = {p["name"] for p in op.get("parameters", []) if p["in"] in ("path", "query")}
    fields = set(body) if isinstance(body, dict) else set()
    return (named & PROJECT_IDS) | (named & CARRIED) | (fields & CARRIED)


def call(api: httpx.Client, method: str, path: str, query: dict, body: Any) -> httpx.Response:
    return api.request(method, path, params=query, json=body, timeout=TIMEOUT)


def leaked(resp: httpx.Response, other: World) -> list[str]:
    """The other user's ids in a 2xx answer."""
    if not resp.is_success:
        return []
    text = resp.text
    return [name for name, value in other.ids().items() if value in text]


@pytest.fixture(scope="module")
def alice(stack: Stack) -> World:
    return world(stack, "alice")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> World:
    return world(stack, "bob")


def test_every_route_answers_another_users_ids_as_unknown(stack: Stack, alice: World, bob: World):
    tried, wrong = 0, []
    for who, other in ((alice, bob), (bob, alice)):
        with as_user(stack, who.token) as api:
            for method, template, op in operations():
                path, query, body = request_of(template, op, other.ids())
                names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                if not names and not carries(op, body):
                    continue  # nothing of anyone's: tried with one's own below
                resp = call(api, method, path, query, body)
                tried += 1
                if resp.status_code == 403:  # fine if it refuses one's own ids too (admins')
                    own = call(api, method, *request_of(template, op, who.ids()))
                    expected = own.status_code == 403
                elif names & USER_IDS and not names & PROJECT_IDS:
                    expected = resp.status_code == 404  # another user's account or key
                else:
                    expected = resp.status_code == 404
                    expected = expected and resp.json()["error"]["code"] == "NOT_FOUND"
                if not expected or leaked(resp, other):
                    wrong.append(
                        f"{method.upper()} {template}: {resp.status_code} {resp.text[:200]}"
                    )
    assert tried > 40
    assert not wrong, "\n".join(wrong)


def test_another_users_id_is_refused_exactly_as_an_unknown_one(stack, alice: World, bob: World):
    unknown = {k: uuid.uuid4().hex for k in bob.ids()}
    unknown["task_id"] = unknown["run_id"]  # as bob's: a task's id is its run's
    with as_user(stack, alice.token) as api:
        for method, template, op in operations():
            path, query, body = request_of(template, op, bob.ids())
            if not carries(op, body) & (PROJECT_IDS | CARRIED):
                continue
            theirs = call(api, method, path, query, body)
            path, query, body = request_of(template, op, unknown)
            nothing = call(api, method, path, query, body)
            assert theirs.status_code == nothing.status_code, template
            assert theirs.status_code in (403, 404), template
            mine, never = theirs.json()["error"], nothing.json()["error"]
            assert mine["code"] == never["code"]
            assert mine.get("field") == never.get("field"), template
            # The same words, but for the id itself.
            for name, value in bob.ids().items():
                mine["message"] = mine["message"].replace(value, f"<{name}>")
            for name, value in unknown.items():
                never["message"] = never["message"].replace(value, f"<{name}>")
            assert mine["message"] == never["message"], template


def test_no_route_shows_one_user_the_others_data(stack: Stack, alice: World, bob: World):
    """Every GET with one's own ids (and every list with none): nothing of the other's."""
    with as_user(stack, alice.token) as api:
        for method, template, op in operations():
            if method != "get" or op.get("x-stream-token"):
                continue  # streams are tried with the other's ids only (they do not end)
            path, query, body = request_of(template, op, alice.ids())
            resp = call(api, method, path, query, body)
            assert resp.status_code < 500, f"{template}: {resp.text}"
            assert not leaked(resp, bob), f"{template} shows bob's {leaked(resp, bob)}"
        assert [p["id"] for p in ok(api.get(f"{API}/projects"))["items"]] == [alice.project_id]
        runs = ok(api.get(f"{API}/training/runs"))["items"]
        assert [r["id"] for r in runs] == [alice.run_id]


def test_a_viewer_may_read_but_is_refused_every_change(stack: Stack, bob: World):
    viewer, token = user(stack, "vera")
    with as_user(stack, bob.token) as owner:
        body = {"user_id": viewer, "role": "viewer"}
        ok(owner.post(f"{API}/projects/{bob.project_id}/members", json=body), 201)
    ids = bob.ids() | {"user_id": viewer}
    refused, wrong = 0, []
    with as_user(stack, token) as api:
        assert ok(api.get(f"{API}/projects/{bob.project_id}"))["id"] == bob.project_id
        assert ok(api.get(f"{API}/training/runs/{bob.run_id}"))["id"] == bob.run_id
        assert api.get(f"{API}/export/{bob.export_id}/download").status_code == 200
        for method, template, op in operations():
            path, query, body = request_of(template, op, ids)
            if method == "get" or (method, template) in READS or not carries(op, body):
                continue
            resp = call(api, method, path, query, body)
            refused += 1
            if resp.status_code != 403 or resp.json()["error"]["code"] != "FORBIDDEN":
                wrong.append(f"{method.upper()} {template}: {resp.status_code} {resp.text[:200]}")
    assert refused > 15
    assert not wrong, "\n".join(wrong)
    assert {(m, p) for m, p, _ in operations()} >= READS, "a read listed here no longer exists"


async def test_websockets_refuse_another_users_experiment(stack: Stack, alice: World, bob: World):
    sockets = websocket_paths()
    assert sockets, "the app has WebSocket routes"
    ws_url = stack.base_url.replace("http", "ws", 1)
    headers = {"Authorization": f"Bearer {alice.token}"}
    # The hub (/ws/{client_id}) names nothing in its path: test_original_shapes tries it.
    for template in [s for s in sockets if "{experiment_id}" in s]:
        path = template.replace("{experiment_id}", bob.experiment_id)
        async with connect(ws_url + path, additional_headers=headers) as socket:
            frame = json.loads(await socket.recv())
            assert frame["type"] == "error" and frame["payload"]["code"] == "NOT_FOUND"
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        # one's own experiment: a snapshot of one's own runs
        path = template.replace("{experiment_id}", alice.experiment_id)
        async with connect(ws_url + path, additional_headers=headers) as socket:
            frame = json.loads(await socket.recv())
            assert frame["type"] == "snapshot"
            assert [r["id"] for r in frame["payload"]["runs"]] == [alice.run_id]


def test_the_queue_shows_others_runs_as_their_status_and_place_only(stack, alice, bob):
    long = {"project_id": bob.project_id, "split_id": bob.split_id}
    mine = {"project_id": alice.project_id, "split_id": alice.split_id}
    with as_user(stack, bob.token) as theirs, as_user(stack, alice.token) as api:
        slow = long | {"hyperparameters": FAST | {"epochs": 200}}
        first = ok(theirs.post(f"{API}/training/run", json=slow), 202)
        second = ok(api.post(f"{API}/training/run", json=mine | {"hyperparameters": FAST}), 202)
        try:
            queue = ok(api.get(f"{API}/training/queue"))
            entries = queue["running"] + queue["queued"]
            own = [e for e in entries if e.get("id") == second["id"]]
            assert own and own[0]["visible"] is True
            if second["status"] == "queued":
                assert own[0]["position"] >= 1
            others = [e for e in entries if e.get("id") != second["id"]]
            assert others, queue
            for entry in others:
                assert entry["id"] is None and entry["visible"] is False, entry
                assert set(entry) <= {"id", "status", "visible", "position"}, entry
            assert not leaked(api.get(f"{API}/training/queue"), bob)
            assert not leaked(api.get(f"{API}/system"), bob)
            admin = httpx.get(f"{stack.base_url}{API}/training/queue", headers=stack.headers())
            assert first["id"] in json.dumps(ok(admin))
        finally:
            theirs.post(f"{API}/training/runs/{first['id']}/stop")
            api.post(f"{API}/training/runs/{second['id']}/stop")


#: Path parameter values that try to leave their folder or their id's rule, percent-encoded
#: (a client, as httpx does, resolves a plain ``..`` before sending).
TRAVERSALS = (
    "%2e%2e",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fsecrets%2fjwt.key",
    "..%5C..%5Cwindows",
    "x%00y",
    "%252e%252e",
)


def test_path_traversal_in_every_path_parameter_is_a_4xx_envelope(stack: Stack, alice: World):
    wrong = []
    with as_user(stack, alice.token) as api:
        for method, template, op in operations():
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            for name in names:
                for bad in TRAVERSALS:
                    _, query, body = request_of(template, op, alice.ids())
                    path = template
                    for other in names:
                        value = bad if other == name else (alice.ids() | NUMBERS)[other]
                        path = path.replace("{" + other + "}", value)
                    resp = call(api, method, path, query, body)
                    envelope = resp.headers.get("content-type", "").startswith("application/json")
                    if not (400 <= resp.status_code < 500 and envelope) or (
                        resp.json().get("status") != "error"
                    ):
                        wrong.append(f"{method.upper()} {path}: {resp.status_code}")
    assert not wrong, "\n".join(wrong)


def test_a_run_joins_only_an_experiment_of_its_own_project(stack: Stack, alice: World, bob: World):
    """An experiment's streams show every run queued into it: another project's run there
    would show one project to the other's readers."""
    body = {"project_id": alice.project_id, "split_id": alice.split_id}
    body |= {"experiment_id": bob.experiment_id, "hyperparameters": FAST | {"epochs": 1}}
    with as_user(stack, alice.token) as api:
        before = [r["id"] for r in ok(api.get(f"{API}/training/runs"))["items"]]
        resp = api.post(f"{API}/training/run", json=body)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "experiment_id"
        after = [r["id"] for r in ok(api.get(f"{API}/training/runs"))["items"]]
        assert after == before  # nothing was queued

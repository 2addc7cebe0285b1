"""Project roles against the running studio: what a viewer, an editor, an owner and a site admin
may do; managing members (the last owner stays); projects older than members; the audit trail
and its filters; SSE and WebSocket streams, authenticated and closed when access ends."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import nats
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contracts import projects as p
from tests.access_helpers import as_user, finished, images, ok, project, split, user
from tests.stack import Stack
from tests.training_helpers import API, FAST

pytestmark = pytest.mark.integration


class Team:
    """A project with an owner, an editor and a viewer, and someone from outside."""

    def __init__(self, stack: Stack) -> None:
        self.owner, self.owner_token = user(stack, "olga")
        self.editor, self.editor_token = user(stack, "ed")
        self.viewer, self.viewer_token = user(stack, "vic")
        self.outsider, self.outsider_token = user(stack, "otto")
        with as_user(stack, self.owner_token) as api:
            self.project_id = project(api, "team")
            self.import_id = images(stack, api, self.project_id)
            self.split_id = split(api, self.project_id)
            for member, role in ((self.editor, "editor"), (self.viewer, "viewer")):
                body = {"user_id": member, "role": role}
                ok(api.post(f"{API}/projects/{self.project_id}/members", json=body), 201)
            items = ok(api.get(f"{API}/datasets/{self.project_id}/images?limit=1"))["items"]
            self.image_id = items[0]["id"]


@pytest.fixture(scope="module")
def team(stack: Stack) -> Team:
    return Team(stack)


def status(api: httpx.Client, method: str, path: str, **kwargs: Any) -> int:
    return api.request(method, f"{API}{path}", **kwargs).status_code


def test_each_role_may_do_what_it_includes_and_no_more(stack: Stack, team: Team):
    pid = team.project_id
    image = f"/datasets/{pid}/images/{team.image_id}"
    with (
        as_user(stack, team.viewer_token) as viewer,
        as_user(stack, team.editor_token) as editor,
        as_user(stack, team.owner_token) as owner,
        as_user(stack, team.outsider_token) as outsider,
    ):
        # reading: every member
        for api in (viewer, editor, owner):
            assert status(api, "GET", f"/projects/{pid}") == 200
            assert status(api, "GET", f"/datasets/{pid}/images") == 200
            assert status(api, "GET", f"/datasets/{pid}/thumbnail/{team.image_id}") == 200
            assert status(api, "GET", f"/splits?project_id={pid}") == 200
            assert status(api, "GET", f"/projects/{pid}/members") == 200
        # changing data: editors and owners
        rename = {"name": "renamed"}
        assert status(viewer, "PATCH", f"/projects/{pid}", json=rename) == 403
        assert status(editor, "PATCH", f"/projects/{pid}", json=rename) == 200
        assert status(viewer, "PATCH", image, json={"label": "tl"}) == 403
        assert status(editor, "PATCH", image, json={"label": "tl"}) == 200
        ratios = {"train": 0.7, "val": 0.3}
        body = {"project_id": pid, "name": "by-editor", "ratios": ratios}
        assert status(viewer, "POST", "/splits", json=body) == 403
        made = ok(editor.post(f"{API}/splits", json=body), 201)
        assert status(viewer, "DELETE", f"/splits/{made['id']}") == 403
        assert status(editor, "DELETE", f"/splits/{made['id']}") == 204
        # archiving and members: owners
        for api in (viewer, editor):
            assert status(api, "POST", f"/projects/{pid}/archive") == 403
            add = {"user_id": team.outsider, "role": "viewer"}
            assert status(api, "POST", f"/projects/{pid}/members", json=add) == 403
        assert status(owner, "POST", f"/projects/{pid}/archive") == 200
        assert status(owner, "POST", f"/projects/{pid}/restore") == 200
        # the outsider: nothing exists
        for method, path in (("GET", f"/projects/{pid}"), ("PATCH", f"/projects/{pid}")):
            resp = outsider.request(method, f"{API}{path}", json=rename)
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND"
        assert pid not in outsider.get(f"{API}/projects").text
    # a site admin: everything, member or not
    with stack.sync_client() as admin:
        assert status(admin, "GET", f"/projects/{pid}") == 200
        assert status(admin, "POST", f"/projects/{pid}/archive") == 200
        assert status(admin, "POST", f"/projects/{pid}/restore") == 200
        assert pid in admin.get(f"{API}/projects?limit=500").text


def test_an_editor_trains_evaluates_and_exports_a_viewer_does_not(stack: Stack, team: Team):
    body = {"project_id": team.project_id, "split_id": team.split_id}
    body |= {"hyperparameters": FAST | {"epochs": 1}}
    with as_user(stack, team.viewer_token) as viewer, as_user(stack, team.editor_token) as ed:
        assert status(viewer, "POST", "/training/run", json=body) == 403
        run = ok(ed.post(f"{API}/training/run", json=body), 202)
        assert finished(ed, f"{API}/training/runs/{run['id']}")["status"] == "completed"
        job = {"run_id": run["id"], "subset": "val"}
        assert status(viewer, "POST", "/evaluation/run", json=job) == 403
        assert status(viewer, "POST", "/export/run", json={"run_id": run["id"]}) == 403
        assert ed.post(f"{API}/evaluation/run", json=job).status_code == 202
        export = ok(ed.post(f"{API}/export/run", json={"run_id": run["id"]}), 202)
        done = finished(viewer, f"{API}/export/{export['id']}")
        assert done["status"] == "completed"
        # a viewer reads, downloads and predicts
        assert viewer.get(f"{API}/export/{export['id']}/download").status_code == 200
        thumb = viewer.get(f"{API}/datasets/{team.project_id}/thumbnail/{team.image_id}")
        files = {"file": ("a.jpg", thumb.content, "image/jpeg")}
        assert viewer.post(f"{API}/export/{export['id']}/predict", files=files).status_code == 200


def test_members_are_managed_by_owners_and_the_last_owner_stays(stack: Stack):
    owner, owner_token = user(stack, "own")
    other, _ = user(stack, "mem")
    with as_user(stack, owner_token) as api:
        pid = project(api)
        members = f"{API}/projects/{pid}/members"
        assert [(m["user_id"], m["role"]) for m in ok(api.get(members))["items"]] == [
            (owner, "owner")
        ]
        ghost = api.post(members, json={"user_id": "nobody-here", "role": "viewer"})
        assert ghost.status_code == 404
        assert ghost.json()["error"]["field"] == "user_id"
        assert "nobody-here" in ghost.json()["error"]["message"]
        added = ok(api.post(members, json={"user_id": other, "role": "viewer"}), 201)
        assert added["role"] == "viewer" and added["added_by"] == owner
        again = api.post(members, json={"user_id": other, "role": "editor"})
        assert again.status_code == 409
        changed = ok(api.patch(f"{members}/{other}", json={"role": "editor"}))
        assert changed["role"] == "editor"
        # the only owner can neither leave nor step down
        demote = api.patch(f"{members}/{owner}", json={"role": "viewer"})
        for resp in (api.delete(f"{members}/{owner}"), demote):
            assert resp.status_code == 409, resp.text
            assert resp.json()["error"]["code"] == "LAST_OWNER"
        # with a second owner, the first may go
        ok(api.patch(f"{members}/{other}", json={"role": "owner"}))
        assert api.delete(f"{members}/{owner}").status_code == 204
        # and is then an outsider
        assert api.get(f"{API}/projects/{pid}").status_code == 404
        assert api.delete(f"{members}/{other}").status_code == 404


async def test_a_project_from_before_members_is_seen_by_admins_only(stack: Stack):
    """A project whose events hold no members (created before members existed)."""
    _, token = user(stack, "old")
    pid = uuid.uuid4().hex
    created = p.ProjectCreated(project_id=pid, name="from before", actor="anonymous")
    nc = await nats.connect(stack.nats_url)
    try:
        await nc.jetstream().publish(
            p.event_subject(pid),
            msgspec.json.encode(created),
            headers={"Studio-Event-Type": "projects.project_created.v1", "Nats-Msg-Id": pid},
        )
    finally:
        await nc.close()
    async with stack.client() as admin:
        deadline = time.monotonic() + 20
        while (resp := await admin.get(f"{API}/projects/{pid}")).status_code != 200:
            assert time.monotonic() < deadline, resp.text
        assert resp.json()["data"]["name"] == "from before"
    async with stack.client(token) as api:
        assert (await api.get(f"{API}/projects/{pid}")).status_code == 404
        assert pid not in (await api.get(f"{API}/projects?status=all")).text


def test_the_audit_says_who_did_what_where_and_when(stack: Stack, team: Team):
    pid = team.project_id
    with stack.sync_client() as admin, as_user(stack, team.owner_token) as owner:
        assert owner.get(f"{API}/audit").status_code == 403
        trail = ok(admin.get(f"{API}/audit", params={"project_id": pid, "limit": 500}))
        items = trail["items"]
        assert items and all(i["project_id"] == pid for i in items)
        kinds = {(i["actor"], i["type"]) for i in items}
        assert (team.owner, "projects.project_created.v1") in kinds
        assert (team.owner, "projects.member_added.v1") in kinds
        assert (team.owner, "datasets.import_started.v1") in kinds
        contexts = {i["aggregate"]["context"] for i in items}
        assert contexts <= {"projects", "datasets", "training", "exports"}
        times = [i["occurred_at"] for i in items]
        assert times == sorted(times, reverse=True)
        # by actor
        mine = ok(admin.get(f"{API}/audit", params={"project_id": pid, "actor": team.owner}))
        assert mine["items"] and {i["actor"] for i in mine["items"]} == {team.owner}
        # by time: nothing before the project, everything after it began
        first = min(times)
        before = ok(admin.get(f"{API}/audit", params={"project_id": pid, "until": first}))
        assert before["items"] == []
        params = {"project_id": pid, "since": first, "limit": 500}
        since = ok(admin.get(f"{API}/audit", params=params))
        assert len(since["items"]) == len(items)
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert ok(admin.get(f"{API}/audit", params={"since": future}))["items"] == []
        # paged by cursor: every item once, in order
        seen, cursor = [], None
        while True:
            params = {"project_id": pid, "limit": 3} | ({"cursor": cursor} if cursor else {})
            page = ok(admin.get(f"{API}/audit", params=params))
            seen += page["items"]
            if not (cursor := page["next_cursor"]):
                break
        assert seen == items
        assert admin.get(f"{API}/audit", params={"cursor": "not-one"}).status_code == 422
        # no secret of the identity stream ever reaches it
        everything = admin.get(f"{API}/audit", params={"limit": 500}).text
        assert "identity.user_created.v1" in everything
        assert "seal" not in everything and "hash" not in everything


def sse_lines(api: httpx.Client, path: str, **kwargs: Any):
    return api.stream("GET", f"{API}{path}", timeout=30, **kwargs)


def read_until(lines, wanted: str, deadline_s: float = 30.0) -> list[str]:
    seen, deadline = [], time.monotonic() + deadline_s
    for line in lines:
        seen.append(line)
        if line.startswith(wanted):
            return seen
        assert time.monotonic() < deadline, seen
    raise AssertionError(f"the stream ended before {wanted!r}: {seen}")


def stream_token(stack: Stack, token: str) -> str:
    with as_user(stack, token) as api:
        return str(ok(api.post(f"{API}/auth/stream-token"))["stream_token"])


def test_sse_takes_a_header_or_a_stream_token_and_nothing_else(stack: Stack, team: Team):
    path = f"{stack.base_url}{API}/projects/{team.project_id}/events"
    assert httpx.get(path, timeout=10).status_code == 401
    # an access token does not go in a URL
    in_url = {"access_token": team.viewer_token}
    assert httpx.get(path, params=in_url, timeout=10).status_code == 401
    ticket = stream_token(stack, team.viewer_token)
    with httpx.stream("GET", path, params={"access_token": ticket}, timeout=30) as resp:
        assert resp.status_code == 200
        assert read_until(resp.iter_lines(), "event: project_created")
    # an outsider's ticket opens nothing: the project does not exist for them
    ticket = stream_token(stack, team.outsider_token)
    assert httpx.get(path, params={"access_token": ticket}, timeout=10).status_code == 404


def test_an_open_stream_closes_when_its_reader_leaves_the_project(stack: Stack):
    _, owner_token = user(stack, "own")
    reader, reader_token = user(stack, "rdr")
    with as_user(stack, owner_token) as api:
        pid = project(api)
        member = {"user_id": reader, "role": "viewer"}
        ok(api.post(f"{API}/projects/{pid}/members", json=member), 201)
        ticket = stream_token(stack, reader_token)
        url = f"{stack.base_url}{API}/projects/{pid}/events"
        with httpx.stream("GET", url, params={"access_token": ticket}, timeout=30) as resp:
            lines = resp.iter_lines()
            read_until(lines, "event: member_added")
            assert api.delete(f"{API}/projects/{pid}/members/{reader}").status_code == 204
            seen = read_until(lines, "event: closed")
            data = json.loads(next(lines).removeprefix("data: "))
            assert data["code"] == "NOT_FOUND", seen


def test_an_open_stream_closes_when_its_session_ends(stack: Stack, team: Team):
    reader, reader_token = user(stack, "lgt")
    with as_user(stack, team.owner_token) as api:
        member = {"user_id": reader, "role": "viewer"}
        ok(api.post(f"{API}/projects/{team.project_id}/members", json=member), 201)
    headers = {"Authorization": f"Bearer {reader_token}"}
    url = f"{stack.base_url}{API}/projects/{team.project_id}/events"
    with httpx.stream("GET", url, headers=headers, timeout=30) as resp:
        lines = resp.iter_lines()
        read_until(lines, "event: project_created")
        assert httpx.post(f"{stack.base_url}{API}/auth/logout", headers=headers).status_code == 200
        read_until(lines, "event: closed")
        assert json.loads(next(lines).removeprefix("data: "))["code"] == "UNAUTHENTICATED"


async def test_a_websocket_authenticates_and_closes_4401_when_its_session_ends(stack, team):
    body = {"project_id": team.project_id, "split_id": team.split_id}
    body |= {"hyperparameters": FAST | {"epochs": 200}}
    with as_user(stack, team.editor_token) as editor:
        run = ok(editor.post(f"{API}/training/run", json=body), 202)
    url = f"{stack.base_url.replace('http', 'ws', 1)}/ws/experiments/{run['experiment_id']}"
    try:
        async with connect(url) as socket:  # no credential
            frame = json.loads(await socket.recv())
            assert frame["payload"]["code"] == "UNAUTHENTICATED"
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        reader, reader_token = user(stack, "wsr")
        with as_user(stack, team.owner_token) as api:
            member = {"user_id": reader, "role": "viewer"}
            ok(api.post(f"{API}/projects/{team.project_id}/members", json=member), 201)
        ticket = stream_token(stack, reader_token)
        async with connect(f"{url}?access_token={ticket}") as socket:
            assert json.loads(await socket.recv())["type"] == "snapshot"
            async with stack.client(reader_token) as api:
                assert (await api.post(f"{API}/auth/logout")).status_code == 200
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # progress and epochs may come first
                    frame = json.loads(await socket.recv())
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            assert frame["type"] == "error" and frame["payload"]["code"] == "UNAUTHENTICATED"
    finally:
        with stack.sync_client() as admin:
            admin.post(f"{API}/training/runs/{run['id']}/stop")

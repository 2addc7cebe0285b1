"""Who sees which page: the pages apply the API's access rules. A project page (every page route
with ``{project_id}``, read from the route table so a page added later is covered) answers its
members, and answers everyone else exactly as it answers an id that does not exist. A page is
never served to a stranger, and a cookie session never outlives signing out."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("identity", "projects")
PASSWORD = "a long enough passphrase"
UNKNOWN = "0123456789abcdef0123456789abcdef"


def page_routes() -> list[str]:
    """Every GET page path (not the API, probes, the docs or static files) the gateway serves;
    the AsyncAPI page is a document beside /docs, public where the docs are."""
    app = create_app(Settings(jwt_secret="only-to-list-the-routes-" + "x" * 32))
    found = []
    for context in iter_route_contexts(app.routes):
        path = str(context.path)
        if not isinstance(context.original_route, APIRoute) or "GET" not in (context.methods or ()):
            continue
        if path.startswith(
            ("/api", "/health", "/metrics", "/ws", "/docs", "/redoc", "/openapi", "/asyncapi")
        ):
            continue
        found.append(path)
    return sorted(set(found))


def signed_in(stack: Stack, user: str, password: str) -> httpx.Client:
    """A client holding the pages' cookie session, signed in through the form."""
    client = httpx.Client(base_url=stack.base_url, timeout=20)
    answer = client.post("/login", data={"username": user, "password": password, "next": "/"})
    assert answer.status_code == 303, answer.text
    assert "studio_access" in client.cookies
    return client


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, str]:
    api = stack.sync_client(timeout=20)
    project = api.post("/api/v1/projects", json={"name": "pages access"}).json()["data"]["id"]
    for user in ("member", "stranger"):
        stack.create_user(user, PASSWORD)
    added = api.post(
        f"/api/v1/projects/{project}/members", json={"user_id": "member", "role": "viewer"}
    )
    assert added.status_code == 201, added.text
    return {"project": project}


def test_every_project_page_answers_members_and_404s_everyone_else_alike(stack, world):
    pages = [p for p in page_routes() if "{project_id}" in p]
    assert len(pages) >= 5, pages  # dataset, split, training, evaluation, export
    member = signed_in(stack, "member", PASSWORD)
    stranger = signed_in(stack, "stranger", PASSWORD)
    for page in pages:
        own = page.replace("{project_id}", world["project"])
        assert member.get(own).status_code == 200, own
        refused = stranger.get(own)
        unknown = stranger.get(page.replace("{project_id}", UNKNOWN))
        assert refused.status_code == unknown.status_code == 404, own
        assert "text/html" in refused.headers["content-type"]
        assert scrub(refused.text, world["project"]) == scrub(unknown.text, UNKNOWN)


def test_every_page_sends_a_stranger_to_sign_in_and_serves_the_signed_in(stack, world):
    admin = signed_in(stack, ADMIN, ADMIN_PASSWORD)
    assert admin.get("/").headers["location"] == "/projects"
    for page in page_routes():
        if page in ("/login", "/"):
            continue
        path = page.replace("{project_id}", world["project"])
        anonymous = httpx.get(f"{stack.base_url}{path}")
        assert anonymous.status_code == 303, path
        assert anonymous.headers["location"].startswith("/login"), path
        shown = admin.get(path)
        assert shown.status_code == 200, (path, shown.status_code)
        assert shown.headers["content-type"].startswith("text/html")
        assert shown.headers["cache-control"] == "no-store"
        assert "<script>" not in shown.text and " style=" not in shown.text, path


def test_a_part_of_a_page_reloading_without_a_session_sends_the_whole_page_to_sign_in(stack):
    hx = {"HX-Request": "true", "HX-Current-URL": f"{stack.base_url}/projects?q=cats"}
    answer = httpx.get(f"{stack.base_url}/projects", headers=hx)
    assert answer.status_code == 401
    assert answer.headers["hx-redirect"] == "/login?next=/projects%3Fq%3Dcats"
    assert "<form" not in answer.text


def test_signing_out_of_the_pages_ends_the_session_everywhere(stack, world):
    client = signed_in(stack, "member", PASSWORD)
    token = client.cookies["studio_access"]
    assert client.get("/projects").status_code == 200
    out = client.post("/logout")
    assert out.status_code == 303
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{stack.base_url}/api/v1/auth/me", headers=bearer).status_code == 401
    again = httpx.get(f"{stack.base_url}/projects", cookies={"studio_access": token})
    assert again.status_code == 303


def test_an_expired_access_cookie_is_renewed_from_the_refresh_cookie(stack, world):
    client = signed_in(stack, "member", PASSWORD)
    refresh = client.cookies["studio_refresh"]
    # A page asked for with only the refresh cookie (the access cookie has expired).
    fresh = httpx.Client(base_url=stack.base_url, timeout=20)
    fresh.cookies.set("studio_refresh", refresh, path="/session")
    answer = fresh.get("/projects", headers={"Cookie": f"studio_refresh={refresh}"})
    assert answer.status_code == 200, answer.status_code
    renewed = answer.headers.get_list("set-cookie")
    assert any(c.startswith("studio_access=") for c in renewed)
    assert any(c.startswith("studio_refresh=") and "Path=/session" in c for c in renewed)
    # The refresh token rotated: the old one is spent.
    spent = httpx.post(
        f"{stack.base_url}/session/refresh",
        headers={"X-Requested-With": "studio", "Cookie": f"studio_refresh={refresh}"},
    )
    assert spent.status_code == 401


def scrub(html: str, an_id: str) -> str:
    """A page without what differs between two answers for the same reason: the request id and
    the id asked for."""
    html = re.sub(r"[0-9a-f]{32}", "ID", html.replace(an_id, "ID"))
    return html

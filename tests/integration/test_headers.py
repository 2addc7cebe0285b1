"""Security headers on every answer (errors included), the docs' own policy, CORS off by
default and an allow-list when configured, and the docs gone when turned off."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.stack import API, Stack

STACK_SERVICES = ("projects",)
ALLOWED = "https://studio.example"


def assert_secure(resp: httpx.Response) -> None:
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["cross-origin-resource-policy"] == "same-origin"
    assert "strict-transport-security" not in resp.headers  # no TLS in front here


def test_every_answer_carries_the_security_headers(stack: Stack) -> None:
    with stack.sync_client() as signed_in, httpx.Client(base_url=stack.base_url) as anonymous:
        answers = [
            anonymous.get("/health"),
            anonymous.get(f"{API}/projects"),  # 401
            anonymous.get("/no/such/page"),  # 404
            signed_in.get(f"{API}/projects"),
            signed_in.post(f"{API}/projects", content=b"{", headers={"content-type": "x/y"}),
            signed_in.post(f"{API}/projects", content=b"x" * (2 * 1024**2)),  # 413
        ]
    assert [r.status_code for r in answers] == [200, 401, 404, 200, 422, 413]
    for resp in answers:
        assert_secure(resp)


def test_the_docs_page_may_load_exactly_what_it_needs(stack: Stack) -> None:
    resp = httpx.get(f"{stack.base_url}/docs")
    assert resp.status_code == 200
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src is not None
    for src in re.findall(r'<script src="([^"]+)"', resp.text):
        origin = re.match(r"https://[^/]+", src)
        assert origin is not None and origin.group(0) in script_src.group(1), src
    # Only the docs pages: the API's own answers stay strict.
    assert_secure(httpx.get(f"{stack.base_url}/openapi.json"))


def test_cors_is_off_by_default(stack: Stack) -> None:
    preflight = httpx.options(
        f"{stack.base_url}{API}/projects",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
    )
    simple = httpx.get(f"{stack.base_url}/health", headers={"Origin": ALLOWED})
    for resp in (preflight, simple):
        assert "access-control-allow-origin" not in resp.headers


Local = Callable[..., TestClient]


@pytest.fixture
def local(tmp_path: Path) -> Local:
    """Builds an app in this process (no lifespan: CORS, headers and routing only)."""

    def build(**settings: object) -> TestClient:
        return TestClient(create_app(Settings.model_validate({"workspace": tmp_path, **settings})))

    return build


def test_cors_allows_exactly_the_listed_origins(local: Local) -> None:
    client = local(cors_origins=(ALLOWED,))
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = client.options(f"{API}/projects", headers={"Origin": ALLOWED, **asks})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    # the allowed origins' pages may show the studio's images
    assert "cross-origin-resource-policy" not in client.get("/no/such/page").headers
    other = client.options(f"{API}/projects", headers={"Origin": "https://evil.example", **asks})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_docs_turned_off_are_not_served(local: Local) -> None:
    client = local(docs_enabled=False)
    for path in ("/docs", "/redoc", "/openapi.json"):
        resp = client.get(path)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "NOT_FOUND"
        # a browser asking for it gets the not-found page
        page = client.get(path, headers={"Accept": "text/html"})
        assert page.status_code == 404 and "Not found" in page.text
    # the home page sends a browser to sign in, not to the docs' 404
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 303
    assert home.headers["location"] == "/login"


def test_behind_tls_every_answer_asks_browsers_to_stay_on_https(local: Local) -> None:
    resp = local(tls_terminated=True).get("/no/such/page")
    assert resp.headers["strict-transport-security"].startswith("max-age=31536000")

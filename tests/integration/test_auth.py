"""Authentication at the gateway against a real identity service: signing in and out, refresh
rotation, password changes, disabled users, API keys, forged tokens, and the rule that nothing
but health, metrics, sign-in and the docs answers a caller without credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.gateway.app import create_app
from services.gateway.auth import tokens
from services.gateway.readmodels import identity as read
from services.kernel.settings import Settings
from tests.stack import ADMIN, ADMIN_PASSWORD, API, Stack
from tests.stream_helpers import ws_url

pytestmark = pytest.mark.integration
STACK_SERVICES = ("identity", "projects")
PASSWORD = "correct horse battery"
#: Settings to build the app's route table with, touching no workspace.
OFFLINE = Settings(jwt_secret="only-to-list-the-routes-" + "x" * 32)
#: What answers without credentials: probes, Prometheus, signing in, and the docs.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/auth/refresh"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    # The bus's AsyncAPI document and its page: docs like /docs, served only where those are.
    ("GET", "/asyncapi.json"),
    ("GET", "/asyncapi"),
}
#: The pages that answer a stranger: the sign-in form, signing in and out, renewing a session
#: (refused without a refresh cookie). Every other page sends a stranger to ``/login``.
PUBLIC_PAGES = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/session/refresh"),
    ("GET", "/static"),  # the pages' scripts, styles and vendored libraries: no data
}


def new_user(stack: Stack, role: str = "user") -> str:
    user_id = f"u{uuid.uuid4().hex[:10]}"
    stack.create_user(user_id, PASSWORD, role=role)
    return user_id


def get(stack: Stack, path: str, token: str | None = None, **headers: str) -> httpx.Response:
    sent = ({"Authorization": f"Bearer {token}"} if token else {}) | headers
    return httpx.get(f"{stack.base_url}{path}", headers=sent, timeout=15)


def post(stack: Stack, path: str, token: str | None = None, **kwargs: object) -> httpx.Response:
    sent = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{stack.base_url}{path}", headers=sent, timeout=15, **kwargs)  # type: ignore[arg-type]


def sign_in(stack: Stack, user_id: str, password: str = PASSWORD) -> httpx.Response:
    form = {"username": user_id, "password": password}
    return httpx.post(f"{stack.base_url}{API}/auth/token", data=form, timeout=15)


def unauthenticated(resp: httpx.Response) -> dict:
    """The 401 envelope, with the challenge a client needs."""
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "UNAUTHENTICATED"
    assert body["request_id"] == resp.headers["x-request-id"]
    assert resp.headers["www-authenticate"] == "Bearer"
    return body["error"]


def refused_sign_in(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == {
        "code": "INVALID_CREDENTIALS",
        "message": "wrong username or password",
    }


# --- signing in --------------------------------------------------------------------------------


def test_sign_in_answers_the_oauth2_fields_and_me_says_who(stack: Stack):
    resp = sign_in(stack, ADMIN, ADMIN_PASSWORD)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    # the OAuth2 fields at the top level, so that Swagger's Authorize button can use them
    assert answer["token_type"] == "bearer"
    assert 0 < answer["expires_in"] <= 30 * 60
    assert answer["access_token"] and answer["refresh_token"]
    assert resp.headers["cache-control"] == "no-store"
    me = get(stack, f"{API}/auth/me", answer["access_token"])
    assert me.status_code == 200, me.text
    data = me.json()["data"]
    assert (data["id"], data["site_role"], data["via"], data["is_admin"]) == (
        ADMIN,
        "admin",
        "token",
        True,
    )
    assert "password_seal" not in data
    # and the /api alias signs in too
    form = {"username": ADMIN, "password": ADMIN_PASSWORD}
    assert httpx.post(f"{stack.base_url}/api/auth/token", data=form).status_code == 200


def test_the_docs_can_sign_in():
    spec = create_app(OFFLINE).openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == f"{API}/auth/token"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    assert {"OAuth2PasswordBearer": []} in spec["paths"][f"{API}/projects"]["get"]["security"]


@pytest.mark.parametrize(
    ("user_id", "password"),
    [(ADMIN, "wrong password"), ("nobody-here", PASSWORD), ("Not A.Name", PASSWORD), (ADMIN, "")],
)
def test_a_wrong_password_or_unknown_user_is_one_401(stack: Stack, user_id, password):
    resp = sign_in(stack, user_id, password)
    if password == "":  # the form requires a password: the field is named
        assert resp.status_code == 422
        return
    refused_sign_in(resp)


# --- sessions ------------------------------------------------------------------------------------


def test_refresh_rotates_the_refresh_token(stack: Stack):
    user = new_user(stack)
    first = sign_in(stack, user).json()
    # when the client refreshes
    resp = post(stack, f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    # then the new tokens work
    assert get(stack, f"{API}/auth/me", second["access_token"]).json()["data"]["id"] == user
    third = post(stack, f"{API}/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200, third.text
    latest = third.json()
    # and a rotated-out refresh token that comes back was copied: refused, and the session ends
    again = post(stack, f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    refused_sign_in(again)
    unauthenticated(get(stack, f"{API}/auth/me", latest["access_token"]))
    ended = post(stack, f"{API}/auth/refresh", json={"refresh_token": latest["refresh_token"]})
    refused_sign_in(ended)
    # while a refresh token never issued says no more than a wrong password does
    refused_sign_in(post(stack, f"{API}/auth/refresh", json={"refresh_token": "made-up"}))


def test_logout_ends_the_session_at_once(stack: Stack):
    user = new_user(stack)
    answer = sign_in(stack, user).json()
    other = sign_in(stack, user).json()  # another device
    token = answer["access_token"]
    resp = post(stack, f"{API}/auth/logout", token)
    assert resp.status_code == 200, resp.text
    # the very next request with its token is refused, and so is its refresh token
    unauthenticated(get(stack, f"{API}/auth/me", token))
    gone = post(stack, f"{API}/auth/refresh", json={"refresh_token": answer["refresh_token"]})
    assert gone.status_code == 401
    # while the other device stays signed in
    assert get(stack, f"{API}/auth/me", other["access_token"]).status_code == 200


def test_a_password_change_revokes_every_older_token(stack: Stack):
    user = new_user(stack)
    here, there = sign_in(stack, user).json(), sign_in(stack, user).json()
    new = "a brand new passphrase"
    body = {"current_password": PASSWORD, "new_password": new}
    # a wrong current password changes nothing
    wrong = post(
        stack,
        f"{API}/auth/password",
        here["access_token"],
        json=body | {"current_password": "nope"},
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "current_password"
    assert get(stack, f"{API}/auth/me", here["access_token"]).status_code == 200
    # when the user changes it
    resp = post(stack, f"{API}/auth/password", here["access_token"], json=body)
    assert resp.status_code == 200, resp.text
    fresh = resp.json()["access_token"]
    # then every token from before is refused, this device's too, and the answer's works
    unauthenticated(get(stack, f"{API}/auth/me", here["access_token"]))
    unauthenticated(get(stack, f"{API}/auth/me", there["access_token"]))
    stale = post(stack, f"{API}/auth/refresh", json={"refresh_token": there["refresh_token"]})
    assert stale.status_code == 401
    assert get(stack, f"{API}/auth/me", fresh).status_code == 200
    refused_sign_in(sign_in(stack, user, PASSWORD))
    assert sign_in(stack, user, new).status_code == 200


def test_an_admin_resets_a_password_and_the_user_is_signed_out(stack: Stack):
    user = new_user(stack)
    token = sign_in(stack, user).json()["access_token"]
    resp = post(
        stack,
        f"{API}/users/{user}/password",
        stack.token(),
        json={"new_password": "reset by admin"},
    )
    assert resp.status_code == 200, resp.text
    unauthenticated(get(stack, f"{API}/auth/me", token))
    assert sign_in(stack, user, "reset by admin").status_code == 200


def test_a_disabled_user_is_refused_everywhere_until_enabled(stack: Stack):
    user = new_user(stack)
    token = sign_in(stack, user).json()["access_token"]
    key = post(stack, f"{API}/auth/keys", token, json={"name": "script"}).json()["data"]["key"]
    resp = post(stack, f"{API}/users/{user}/disable", stack.token())
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "disabled"
    # the token, the API key and signing in all stop working at once
    unauthenticated(get(stack, f"{API}/auth/me", token))
    unauthenticated(get(stack, f"{API}/auth/me", **{"X-API-Key": key}))
    refused_sign_in(sign_in(stack, user))
    # until an admin enables the user again
    assert post(stack, f"{API}/users/{user}/enable", stack.token()).status_code == 200
    assert sign_in(stack, user).status_code == 200


def test_users_are_for_admins_only(stack: Stack):
    user = new_user(stack)
    token = sign_in(stack, user).json()["access_token"]
    for resp in (
        get(stack, f"{API}/users", token),
        get(stack, f"{API}/users/{user}", token),
        post(stack, f"{API}/users", token, json={"user_id": "mallory", "password": PASSWORD}),
        post(stack, f"{API}/users/{ADMIN}/disable", token),
    ):
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "FORBIDDEN"
    listed = get(stack, f"{API}/users", stack.token()).json()["data"]
    assert user in [u["id"] for u in listed["items"]]
    assert all("password_seal" not in u for u in listed["items"])
    taken = post(stack, f"{API}/users", stack.token(), json={"user_id": user, "password": PASSWORD})
    assert taken.status_code == 409
    assert get(stack, f"{API}/users/nobody-at-all", stack.token()).status_code == 404
    # an admin does not lock themselves out
    assert post(stack, f"{API}/users/{ADMIN}/disable", stack.token()).status_code == 409


def test_commands_carry_the_signed_in_user_as_their_actor(stack: Stack):
    user = new_user(stack)
    token = sign_in(stack, user).json()["access_token"]
    made = post(stack, f"{API}/projects", token, json={"name": "mine"})
    assert made.status_code == 201, made.text
    assert made.json()["data"]["created_by"] == user


# --- API keys ------------------------------------------------------------------------------------


def test_an_api_key_is_shown_once_works_both_ways_and_dies_when_revoked(stack: Stack):
    user = new_user(stack)
    token = sign_in(stack, user).json()["access_token"]
    made = post(stack, f"{API}/auth/keys", token, json={"name": "nightly"})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["data"]["key"], made.json()["data"]["key_id"]
    assert key.startswith(f"sk_{key_id}_")
    # listed by name, never shown again
    listed = get(stack, f"{API}/auth/keys", token).json()["data"]["items"]
    assert [(k["key_id"], k["name"], k["status"]) for k in listed] == [
        (key_id, "nightly", "active")
    ]
    assert key not in json.dumps(listed) and "key_hash" not in listed[0]
    # it works as a bearer token and as X-API-Key
    for me in (
        get(stack, f"{API}/auth/me", key),
        get(stack, f"{API}/auth/me", **{"X-API-Key": key}),
    ):
        assert me.status_code == 200, me.text
        assert (me.json()["data"]["id"], me.json()["data"]["via"]) == (user, "api_key")
    # another user cannot see or revoke it
    stranger = sign_in(stack, new_user(stack)).json()["access_token"]
    assert get(stack, f"{API}/auth/keys", stranger).json()["data"]["items"] == []
    deleted = httpx.delete(
        f"{stack.base_url}{API}/auth/keys/{key_id}", headers={"Authorization": f"Bearer {stranger}"}
    )
    assert deleted.status_code == 404
    # its owner revokes it, and the next request with it is refused
    deleted = httpx.delete(
        f"{stack.base_url}{API}/auth/keys/{key_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert deleted.status_code == 204, deleted.text
    unauthenticated(get(stack, f"{API}/auth/me", **{"X-API-Key": key}))
    unauthenticated(get(stack, f"{API}/auth/me", key))
    assert get(stack, f"{API}/auth/keys", token).json()["data"]["items"][0]["status"] == "revoked"


def test_an_api_key_stops_at_its_expiry(stack: Stack):
    token = sign_in(stack, new_user(stack)).json()["access_token"]
    expires = datetime.now(UTC) + timedelta(seconds=3)
    made = post(
        stack, f"{API}/auth/keys", token, json={"name": "brief", "expires_at": expires.isoformat()}
    )
    assert made.status_code == 201, made.text
    key = made.json()["data"]["key"]
    assert get(stack, f"{API}/auth/me", key).status_code == 200
    deadline = time.monotonic() + 30
    while (resp := get(stack, f"{API}/auth/me", key)).status_code == 200:
        assert time.monotonic() < deadline, "the key outlived its expiry"
        time.sleep(0.2)
    unauthenticated(resp)
    past = post(
        stack, f"{API}/auth/keys", token, json={"name": "old", "expires_at": "2001-01-01T00:00:00Z"}
    )
    assert past.status_code == 422


# --- forged and misplaced tokens -----------------------------------------------------------------


def forged(stack: Stack) -> dict[str, str]:
    """Tokens no one may pass off as the admin's."""
    good = sign_in(stack, ADMIN, ADMIN_PASSWORD).json()["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    head, payload, signature = good.split(".")
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    none_head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    user_claims = claims | {"sub": "someone-else", "role": "user"}
    past = datetime.now(UTC) - timedelta(hours=2)
    expired, _ = tokens.mint(
        stack.jwt_secret,
        kind="access",
        user_id=ADMIN,
        session_id=claims["sid"],
        site_role="admin",
        tier="premium",
        lifetime=timedelta(minutes=30),
        now=past,
    )
    stream = post(stack, f"{API}/auth/stream-token", good).json()["data"]["stream_token"]
    return {
        "alg none": f"{none_head}.{payload}.",
        "alg none, signature kept": f"{none_head}.{payload}.{signature}",
        "wrong key": jwt.encode(claims, "another secret of thirty-two bytes!", algorithm="HS256"),
        "HS512": jwt.encode(claims, stack.jwt_secret, algorithm="HS512"),
        "tampered payload": f"{head}.{b64(json.dumps(user_claims).encode())}.{signature}",
        "expired": expired,
        "no session": jwt.encode(claims | {"sid": "0" * 32}, stack.jwt_secret, algorithm="HS256"),
        "no typ": jwt.encode({k: v for k, v in claims.items() if k != "typ"}, stack.jwt_secret),
        "stream token on REST": stream,
        "garbage": "not-a-token",
        "an API key that does not exist": "sk_0123abcd_" + "x" * 40,
        "an API key without secret": "sk_",
    }


def test_forged_and_misplaced_tokens_get_the_401_envelope_never_a_5xx(stack: Stack):
    for name, token in forged(stack).items():
        for resp in (
            get(stack, f"{API}/auth/me", token),
            get(stack, f"{API}/projects", token),
            get(stack, f"{API}/auth/me?access_token={token}"),
        ):
            assert resp.status_code == 401, (name, resp.status_code, resp.text)
            unauthenticated(resp)


def test_a_stream_token_opens_a_websocket_but_not_a_rest_route(stack: Stack):
    admin = stack.token()
    stream = post(stack, f"{API}/auth/stream-token", admin).json()["data"]
    assert 0 < stream["expires_in"] <= 120
    url = ws_url(stack.base_url, f"/ws/experiments/{'0' * 32}")

    async def first_message(query: str) -> dict:
        async with connect(url + query) as sock:
            return json.loads(await asyncio.wait_for(sock.recv(), 15))

    # a stream token in the URL opens a socket (this experiment is unknown: it says so)
    message = asyncio.run(first_message(f"?access_token={stream['stream_token']}"))
    assert message["type"] == "error" and message["payload"]["code"] == "NOT_FOUND"
    # an access token is never taken from a URL, and a socket without credentials is refused
    for query in (f"?access_token={admin}", "", "?access_token=forged"):
        assert asyncio.run(ws_refused(url + query)), query
    unauthenticated(get(stack, f"{API}/auth/me?access_token={stream['stream_token']}"))


# --- nothing answers without credentials ---------------------------------------------------------


def routes() -> list[tuple[str, str, bool]]:
    """Every (method, path with ids filled in, is a WebSocket) the gateway serves: the route
    table itself, so that a route added later is walked without anyone remembering to."""
    found = []
    for context in iter_route_contexts(create_app(OFFLINE).routes):
        path = re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", str(context.path))
        if isinstance(context.original_route, APIWebSocketRoute):
            found.append(("WS", path, True))
        else:
            found += [(method, path, False) for method in sorted(context.methods or {"GET"})]
    return found


def test_nothing_but_health_metrics_sign_in_and_docs_answers_without_credentials(stack: Stack):
    served = routes()
    assert len(served) > 40
    for method, path, socket in served:
        if (method, path) in PUBLIC or method == "HEAD":
            continue
        if socket:
            assert asyncio.run(ws_refused(ws_url(stack.base_url, path))), path
            continue
        if (method, path) in PUBLIC_PAGES:
            continue
        if not path.startswith("/api"):  # a page: to the sign-in form, and back after it
            resp = httpx.request(method, f"{stack.base_url}{path}", timeout=15)
            assert resp.status_code == 303, (method, path, resp.status_code)
            assert resp.headers["location"].startswith("/login"), (path, resp.headers)
            continue
        resp = httpx.request(method, f"{stack.base_url}{path}", timeout=15)
        assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
        unauthenticated(resp)
    # and what is public answers
    for method, path in PUBLIC:
        if method == "GET":
            assert httpx.get(f"{stack.base_url}{path}").status_code < 400, path


async def ws_refused(url: str) -> bool:
    """Whether a socket is refused as unauthenticated: at the handshake (401), or accepted only
    to be told why (an ``error`` frame, UNAUTHENTICATED) and closed with 4401."""
    try:
        async with connect(url) as sock:
            try:
                while True:
                    message = json.loads(await asyncio.wait_for(sock.recv(), 15))
                    if message["type"] != "error":
                        return False  # it served something
                    assert message["payload"]["code"] == "UNAUTHENTICATED", message
            except ConnectionClosed:
                pass
        return sock.close_code == 4401
    except InvalidStatus as exc:
        return exc.response.status_code == 401


def test_the_gateways_read_model_keeps_no_password_in_any_form(stack: Stack):
    # the sealed hash stays in the identity stream: no column can hold it
    for table in (read.UserRow, read.SessionRow, read.RefreshTokenRow, read.ApiKeyRow):
        columns = set(table.model_fields)
        assert not {c for c in columns if "seal" in c or c == "password"}, table
    # and the file itself holds nothing of the first admin's password
    sign_in(stack, ADMIN, ADMIN_PASSWORD)
    stored = b"".join(p.read_bytes() for p in (stack.workspace / "gateway").glob("readmodel.db*"))
    assert ADMIN_PASSWORD.encode() not in stored

"""The gateway's signed tokens: only HS256 with our key, every claim present, the right kind,
unexpired. Whether the session behind a token stands is the read model's (integration tests)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from services.gateway.auth import tokens

SECRET = "a test secret that is long enough for HMAC-SHA384 and more"


def mint(**overrides: object) -> str:
    options: dict = {
        "kind": "access",
        "user_id": "alice",
        "session_id": "s1",
        "site_role": "user",
        "tier": "free",
        "lifetime": timedelta(minutes=30),
    } | overrides
    return tokens.mint(SECRET, **options)[0]


def b64(raw: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()


def test_a_minted_token_decodes_to_its_claims():
    claims = tokens.decode(mint(), SECRET)
    assert (claims.user_id, claims.session_id, claims.site_role, claims.tier, claims.kind) == (
        "alice",
        "s1",
        "user",
        "free",
        "access",
    )
    assert claims.expires_at - claims.issued_at == timedelta(minutes=30)


def test_the_kind_is_checked_both_ways():
    stream = mint(kind="stream", lifetime=timedelta(minutes=2))
    with pytest.raises(tokens.InvalidToken, match="stream"):
        tokens.decode(stream, SECRET)
    with pytest.raises(tokens.InvalidToken, match="access"):
        tokens.decode(mint(), SECRET, kinds=frozenset({tokens.STREAM}))
    assert tokens.decode(stream, SECRET, kinds=frozenset({tokens.STREAM})).kind == "stream"


def forgeries() -> dict[str, str]:
    good = mint()
    head, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong key": jwt.encode(
            claims, "another secret, also long enough for HMAC-SHA256 keys", algorithm="HS256"
        ),
        "HS384": jwt.encode(claims, SECRET, algorithm="HS384"),
        "tampered": f"{head}.{b64(claims | {'role': 'admin'})}.{signature}",
        "expired": mint(now=datetime.now(UTC) - timedelta(hours=1)),
        "from the future": mint(now=datetime.now(UTC) + timedelta(hours=1)),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET),
        "no sub": jwt.encode({k: v for k, v in claims.items() if k != "sub"}, SECRET),
        "no typ": jwt.encode({k: v for k, v in claims.items() if k != "typ"}, SECRET),
        "empty sub": jwt.encode(claims | {"sub": ""}, SECRET),
        "sid a number": jwt.encode(claims | {"sid": 7}, SECRET),
        "role missing": jwt.encode({k: v for k, v in claims.items() if k != "role"}, SECRET),
        "garbage": "not.a.token",
        "empty": "",
    }


@pytest.mark.parametrize("name", list(forgeries()))
def test_a_forged_or_stale_token_is_refused(name):
    with pytest.raises(tokens.InvalidToken):
        tokens.decode(forgeries()[name], SECRET)


def test_a_token_verified_once_still_expires(monkeypatch: pytest.MonkeyPatch):
    # given a token checked (and so remembered) while valid
    token = mint(lifetime=timedelta(seconds=60))
    assert tokens.decode(token, SECRET).user_id == "alice"
    # when its expiry (and the clock leeway) has passed, then the remembered check refuses it
    later = datetime.now(UTC).timestamp() + 60 + tokens.LEEWAY_S + 1
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(tokens.InvalidToken, match="Expired"):
        tokens.decode(token, SECRET)

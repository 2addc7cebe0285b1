"""Signed tokens the gateway hands out: short-lived access tokens (JWT) and shorter stream tokens
for ``EventSource`` and WebSocket URLs, which cannot send headers.

Both are HS256 JWTs signed with ``settings.jwt_secret``. Decoding pins the algorithm (so a token
that says ``alg: none`` or another algorithm is refused before its payload is trusted), requires
every claim this module writes, and checks the token's kind (``typ``): a stream token is never
an access token. Whether the session behind a token still stands (logout, password change, a
disabled user) is the read model's to say (``deps``), not this module's.

Imports pyjwt and the standard library only.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import jwt

ALGORITHM: Final = "HS256"
ACCESS: Final = "access"
STREAM: Final = "stream"
Kind = Literal["access", "stream"]
_REQUIRED: Final = ["exp", "iat", "sub", "typ", "jti"]
#: Tolerated clock difference between the gateways that mint and check a token.
LEEWAY_S: Final = 5


class InvalidToken(Exception):
    """The token is not one this gateway signed, or no longer valid: the message says which,
    for the logs; clients are told only that they are not signed in."""


@dataclass(frozen=True)
class Claims:
    """What a valid token says about its bearer."""

    user_id: str
    session_id: str | None
    site_role: str
    tier: str
    kind: Kind
    issued_at: datetime
    expires_at: datetime
    token_id: str


def mint(
    secret: str,
    *,
    kind: Kind,
    user_id: str,
    session_id: str | None,
    site_role: str,
    tier: str,
    lifetime: timedelta,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """A token of ``kind`` for the user, and when it expires."""
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    expires = issued + lifetime
    payload: dict[str, Any] = {
        "sub": user_id,
        "sid": session_id,
        "role": site_role,
        "tier": tier,
        "typ": kind,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), expires


def decode(token: str, secret: str, *, kinds: frozenset[str] = frozenset({ACCESS})) -> Claims:
    """The claims of a token this gateway signed, unexpired and of one of ``kinds``; anything
    else raises ``InvalidToken``.

    A client sends the same token with every request: its signature and claims are checked
    once (``_verified``, a bounded cache) and only its expiry again each time, as pyjwt
    checks it (verifying cost more than the rest of a read)."""
    claims, expires = _verified(token, secret, kinds)
    if expires <= time.time() - LEEWAY_S:
        raise InvalidToken("ExpiredSignatureError: Signature has expired")
    return claims


@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str, kinds: frozenset[str]) -> tuple[Claims, int]:
    """The claims of a token whose signature and claims are valid, and its ``exp``, whatever
    the time; a refusal raises (and is not cached)."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": _REQUIRED, "verify_exp": False},
            leeway=LEEWAY_S,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
    claims = _claims(payload, kinds)
    return claims, int(payload["exp"])


def _claims(payload: dict[str, Any], kinds: frozenset[str]) -> Claims:
    kind, sub, sid = payload.get("typ"), payload.get("sub"), payload.get("sid")
    if kind not in kinds:
        raise InvalidToken(f"a {kind!r} token where {sorted(kinds)} is accepted")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("no subject")
    if sid is not None and not isinstance(sid, str):
        raise InvalidToken("a session id that is not a string")
    role, tier = payload.get("role"), payload.get("tier")
    if not isinstance(role, str) or not isinstance(tier, str):
        raise InvalidToken("no role or tier")
    try:
        issued = datetime.fromtimestamp(int(payload["iat"]), UTC)
        expires = datetime.fromtimestamp(int(payload["exp"]), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidToken("times that are not times") from None
    return Claims(
        user_id=sub,
        session_id=sid,
        site_role=role,
        tier=tier,
        kind=ACCESS if kind == ACCESS else STREAM,
        issued_at=issued,
        expires_at=expires,
        token_id=str(payload["jti"]),
    )

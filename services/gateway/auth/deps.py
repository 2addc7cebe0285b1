"""Who is asking: the dependency every protected route declares, and its ``Annotated`` aliases.

A request proves who it is with one credential: an access token (``Authorization: Bearer
<jwt>``), an API key (``Authorization: Bearer sk_...`` or ``X-API-Key: sk_...``), or, on SSE and
WebSocket routes only, a short-lived stream token in ``?access_token=`` (``EventSource`` and a
browser's WebSocket cannot send headers), or, from the studio's own pages, the access token in
the ``studio_access`` cookie (HttpOnly, SameSite=Strict): a cookie-borne request that changes
something must also carry ``HX-Request`` or ``X-Requested-With`` (headers no other site can make
a browser send), and a WebSocket opened with the cookie must come from the studio's own origin.
A token's signature and expiry are not enough: the
read model must still show its session open, its user enabled, and no password change since the
session began; an API key must be unrevoked and unexpired. Anything else is 401
``UNAUTHENTICATED`` with ``WWW-Authenticate: Bearer``, worded the same whatever the reason.

Imports fastapi, the gateway's ports and the identity read model.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from contracts import identity as c
from services.gateway.auth import tokens
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ApiError
from services.gateway.readmodels import identity as read
from services.kernel.settings import Settings
from services.kernel.sqlite import session

log = logging.getLogger(__name__)

TOKEN_URL: Final = "/api/v1/auth/token"
API_KEY_PREFIX: Final = c.API_KEY_PREFIX
#: The pages' access token; the refresh token lives in ``REFRESH_COOKIE``, sent only to the
#: pages' session routes.
ACCESS_COOKIE: Final = "studio_access"
REFRESH_COOKIE: Final = "studio_refresh"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``openapi_extra`` of an SSE route: it takes a stream token in ``?access_token=`` as well.
STREAM_ROUTE: Final[dict[str, Any]] = {"x-stream-token": True}

oauth2 = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    auto_error=False,
    description="An access token from POST /api/v1/auth/token, or an API key (sk_...).",
)
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from POST /api/v1/auth/keys."
)


def jwt_secret(settings: Settings) -> str:
    if not settings.jwt_secret:  # the settings generate one; never sign with an empty key
        raise RuntimeError("no JWT secret in the settings")
    return settings.jwt_secret


def access_lifetime(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.access_token_minutes)


def stream_lifetime(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.stream_token_seconds)


def unauthenticated(
    message: str = "not signed in, or the credential is no longer valid",
) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def digest(secret: str) -> str:
    """sha256 hex, as the identity events store refresh tokens and API keys' secrets."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def current_principal(
    conn: HTTPConnection,
    bearer: Annotated[str | None, Security(oauth2)],
    api_key: Annotated[str | None, Security(api_key_header)],
) -> Principal:
    """The principal the request authenticated as; 401 without a valid credential."""
    cached: Principal | None = getattr(conn.state, "principal", None)
    if cached is not None:
        return cached
    principal = await authenticate(conn, bearer=bearer, api_key=api_key)
    conn.state.principal = principal
    return principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The principal, who must be a site admin: 403 ``FORBIDDEN`` for anyone else."""
    if not principal.is_admin:
        raise ApiError("FORBIDDEN", "this needs a site admin", status=403)
    return principal


def actor_of(conn: HTTPConnection) -> str:
    """Who a command is sent for: the principal the router's dependency authenticated. A route
    reached without one is a wiring bug, refused rather than sent as nobody."""
    principal: Principal | None = getattr(conn.state, "principal", None)
    if principal is None:
        raise unauthenticated()
    return principal.user_id


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]


def _takes_stream_tokens(conn: HTTPConnection) -> bool:
    if conn.scope["type"] == "websocket":
        return True
    extra = getattr(conn.scope.get("route"), "openapi_extra", None) or {}
    return bool(extra.get("x-stream-token"))


async def authenticate(
    conn: HTTPConnection, *, bearer: str | None, api_key: str | None
) -> Principal:
    """Check the one credential the request carries against the read model."""
    streamable = _takes_stream_tokens(conn)
    query_token = conn.query_params.get("access_token") if streamable else None
    credential = api_key or bearer or query_token
    cookie = None if credential else conn.cookies.get(ACCESS_COOKIE)
    if cookie:
        _same_site(conn)
        credential = cookie
    if not credential:
        raise unauthenticated("sign in: send Authorization: Bearer <token> or X-API-Key")
    settings: Settings = conn.app.state.settings
    if credential.startswith(API_KEY_PREFIX):
        async with session(conn.app.state.gateway.engine) as db:
            return await _by_api_key(db, credential)
    # A stream token only in a URL, an access token only in a header: access tokens live
    # half an hour and URLs end up in logs.
    kinds = frozenset({tokens.STREAM} if credential is query_token else {tokens.ACCESS})
    if credential is cookie:
        kinds = frozenset({tokens.ACCESS})
    if streamable and credential is bearer:
        kinds = frozenset({tokens.ACCESS, tokens.STREAM})
    return await _by_token(conn, credential, jwt_secret(settings), kinds)


def _same_site(conn: HTTPConnection) -> None:
    """A cookie rides along on requests other sites make a browser send: refuse those that
    change something without ``HX-Request`` (no other site can set it without our CORS
    consent), and WebSockets opened from another origin."""
    if conn.scope["type"] == "websocket":
        origin = conn.headers.get("origin")
        host = conn.headers.get("host", "")
        if origin is not None and origin.split("://", 1)[-1] != host:
            raise unauthenticated("this WebSocket comes from another site")
        return
    method = conn.scope.get("method", "GET")
    if method not in SAFE_METHODS and not from_pages(conn):
        raise ApiError(
            "FORBIDDEN",
            "a request signed in by the pages' cookie must come from the pages "
            "(HX-Request or X-Requested-With)",
            status=403,
        )


def from_pages(conn: HTTPConnection) -> bool:
    """Sent by the studio's pages' scripts: htmx's ``HX-Request`` or ``X-Requested-With``
    (a custom header: another site's page cannot make a browser send it to us)."""
    return conn.headers.get("hx-request", "").lower() == "true" or bool(
        conn.headers.get("x-requested-with")
    )


async def _by_token(
    conn: HTTPConnection, token: str, secret: str, kinds: frozenset[str]
) -> Principal:
    try:
        claims = tokens.decode(token, secret, kinds=kinds)
    except tokens.InvalidToken as exc:
        log.info("token refused: %s", exc)
        raise unauthenticated() from None
    user, row = _user_and_session(conn, claims)
    if user is None or (claims.session_id is not None and row is None):
        # Signed by a gateway whose read model is ahead of this one's, or this one is still
        # replaying: catch up with this user's events once.
        await _catch_up(conn, claims.user_id)
        user, row = _user_and_session(conn, claims)
    if user is None or user.disabled:
        raise unauthenticated()
    if claims.session_id is not None:
        if row is None or row.ended or row.user_id != user.id:
            raise unauthenticated()
    elif claims.kind == tokens.ACCESS:
        raise unauthenticated()  # an access token always belongs to a session
    if _before(claims.issued_at, user.password_changed_at):
        raise unauthenticated()
    return Principal(
        user_id=user.id,
        site_role=user.site_role,
        tier=user.tier,
        via="token" if claims.kind == tokens.ACCESS else "stream",
        session_id=claims.session_id,
        expires_at=claims.expires_at,
    )


def _user_and_session(
    conn: HTTPConnection, claims: tokens.Claims
) -> tuple[read.UserSeen | None, read.SessionSeen | None]:
    """The token's user and session as committed now, through the lean read path."""
    reader = conn.app.state.reader
    user = read.user_seen(reader, user_id=claims.user_id)
    if claims.session_id is None:
        return user, None
    return user, read.session_seen(reader, session_id=claims.session_id)


async def _by_api_key(db: AsyncSession, key: str) -> Principal:
    key_id, _, secret = key.removeprefix(API_KEY_PREFIX).partition("_")
    row = await read.get_api_key(db, key_id=key_id) if key_id and secret else None
    # Compared in constant time, and the digest computed whether or not the key exists.
    matches = hmac.compare_digest(digest(secret), row.key_hash if row else digest(""))
    if row is None or not matches or row.revoked or _expired(row.expires_at):
        raise unauthenticated()
    user = await _active_user(db, row.user_id)
    return Principal(
        user_id=user.id,
        site_role=user.site_role,
        tier=user.tier,
        via="api_key",
        session_id=None,
        expires_at=row.expires_at,
    )


async def _active_user(db: AsyncSession, user_id: str) -> read.UserRow:
    user = await read.get_user(db, user_id=user_id)
    if user is None or user.disabled:
        raise unauthenticated()
    return user


async def _catch_up(conn: HTTPConnection, user_id: str) -> None:
    await conn.app.state.gateway.fresh(c.STREAM, c.event_subject(user_id))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _expired(moment: datetime | None) -> bool:
    return moment is not None and _utc(moment) <= datetime.now(UTC)


def _before(issued: datetime, changed: datetime | None) -> bool:
    """Issued before the password changed; a token's time has whole seconds only."""
    return changed is not None and issued < _utc(changed).replace(microsecond=0)

"""REST for signing in and out: the OAuth2 password flow, refresh, logout, password change, who
am I, and stream tokens for ``EventSource``/WebSocket URLs.

``public`` holds the two routes a client reaches without credentials (sign in, refresh); every
route of ``router`` needs a principal, as ``app`` declares. After a command each route waits for
the read model to show it (read-your-writes), so that a session just started is known to the next
request and a session just ended is refused by it. Imports fastapi, the gateway's ports, the
identity contracts and read model.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field

from contracts import identity as c
from contracts import new_id
from contracts.common import CommandAccepted
from services.gateway.auth import tokens
from services.gateway.auth.deps import (
    CurrentUser,
    access_lifetime,
    digest,
    jwt_secret,
    stream_lifetime,
)
from services.gateway.envelope import ERROR_RESPONSES, REQUEST_ID, ApiError, ok
from services.gateway.gateway import DbDep, Gateway, GatewayDep
from services.gateway.readmodels import identity as read
from services.gateway.readmodels.base import iso
from services.kernel.sqlite import session

public = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES)
router = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES)

#: Token answers must not be kept by any cache (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenAnswer(BaseModel):
    """The OAuth2 token response (RFC 6749 §5.1), plus the envelope's ``status`` and ``data``."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_at: str
    status: str = "ok"
    data: dict[str, Any]


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=c.TOKEN_MAX)


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=c.TOKEN_MAX)
    new_password: str = Field(min_length=c.PASSWORD_MIN, max_length=c.PASSWORD_MAX)


@public.post("/token", response_model=TokenAnswer)
async def sign_in(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, gateway: GatewayDep
) -> Response:
    """Sign in with a username and password (OAuth2 password flow): access and refresh tokens."""
    user_id = form.username.strip().lower()
    if len(form.password) > c.TOKEN_MAX or len(user_id) > 64:
        raise ApiError(c.INVALID_CREDENTIALS, c.INVALID_CREDENTIALS_MESSAGE, status=401)
    command = c.Login(
        user_id=user_id,
        password=form.password,
        session_id=new_id(),
        actor=user_id,
        correlation_id=REQUEST_ID.get(),
    )
    return await _issue(gateway, request, command, c.Subjects.LOGIN)


@public.post("/refresh", response_model=TokenAnswer)
async def refresh(body: RefreshBody, request: Request, gateway: GatewayDep) -> Response:
    """Trade a refresh token for a new access and refresh token; the old refresh token dies."""
    async with session(gateway.engine) as db:
        row = await read.session_by_refresh_hash(db, refresh_hash=digest(body.refresh_token))
    if row is None or row.ended:
        raise ApiError(c.INVALID_CREDENTIALS, c.INVALID_CREDENTIALS_MESSAGE, status=401)
    command = c.RefreshSession(
        user_id=row.user_id,
        session_id=row.id,
        refresh_token=body.refresh_token,
        actor=row.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    try:
        return await _issue(gateway, request, command, c.Subjects.REFRESH_SESSION)
    except ApiError:
        # A rotated-out token that came back ends its session: refuse its access tokens from
        # the next request on, not only once the read model gets round to it.
        await gateway.fresh(c.STREAM, c.event_subject(row.user_id))
        raise


@router.post("/logout")
async def logout(principal: CurrentUser, request: Request, gateway: GatewayDep) -> Response:
    """End this session: its access and refresh tokens stop working at once."""
    if principal.session_id is None:
        raise ApiError(
            "BAD_REQUEST", "an API key has no session to end: revoke the key instead", status=400
        )
    command = c.EndSession(
        user_id=principal.user_id,
        session_id=principal.session_id,
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    await send_settled(gateway, request, c.Subjects.END_SESSION, command)
    return ok({"session_id": principal.session_id, "ended": True})


@router.post("/password", response_model=TokenAnswer)
async def change_password(
    body: PasswordBody, principal: CurrentUser, request: Request, gateway: GatewayDep
) -> Response:
    """Change one's own password: every session ends, and a new one starts for this client."""
    command = c.ChangePassword(
        user_id=principal.user_id,
        new_password=body.new_password,
        current_password=body.current_password,
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    await send_settled(gateway, request, c.Subjects.CHANGE_PASSWORD, command)
    login = c.Login(
        user_id=principal.user_id,
        password=body.new_password,
        session_id=new_id(),
        actor=principal.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    return await _issue(gateway, request, login, c.Subjects.LOGIN)


@router.get("/me")
async def me(principal: CurrentUser, db: DbDep) -> Response:
    """Who the credential says you are, and how it proved it."""
    user = await read.get_user(db, user_id=principal.user_id)
    data: dict[str, Any] = user.public() if user else {"id": principal.user_id}
    data.update(
        {
            "via": principal.via,
            "session_id": principal.session_id,
            "expires_at": iso(principal.expires_at) if principal.expires_at else None,
            "is_admin": principal.is_admin,
        }
    )
    return ok(data)


@router.post("/stream-token")
async def stream_token(principal: CurrentUser, request: Request) -> Response:
    """A short-lived token for ``?access_token=`` on SSE and WebSocket routes only."""
    settings = request.app.state.settings
    token, expires = _mint(settings, tokens.STREAM, principal, stream_lifetime(settings))
    data = {
        "stream_token": token,
        "expires_in": _seconds_until(expires),
        "expires_at": iso(expires),
    }
    return ok(data, headers=NO_STORE)


async def settled(
    gateway: Gateway, accepted: CommandAccepted | c.SessionIssued | c.ApiKeyCreated
) -> None:
    """Read-your-writes for identity: a credential's fate must be known before we answer."""
    if not await gateway.caught_up(c.STREAM, accepted.sequence):
        raise ApiError(
            "UNAVAILABLE", "stored, but not yet applied here: try again in a moment", status=503
        )


async def send_settled(
    gateway: Gateway, request: Request, subject: str, command: c.Command
) -> None:
    """Send an identity command and wait until the read model shows it (else 503)."""
    await settled(gateway, await gateway.send(subject, command, request))


async def issue(
    gateway: Gateway, request: Request, command: c.Login | c.RefreshSession, subject: str
) -> c.SessionIssued:
    """Start or refresh a session and wait until the read model knows it."""
    issued = await gateway.ask(subject, command, c.SessionIssued, request)
    await settled(gateway, issued)
    return issued


async def _issue(
    gateway: Gateway, request: Request, command: c.Login | c.RefreshSession, subject: str
) -> Response:
    return token_answer(request, await issue(gateway, request, command, subject))


def access_token(settings: Any, issued: c.SessionIssued) -> tuple[str, datetime]:
    """The access token of a session just issued, and when it expires."""
    return _mint(settings, tokens.ACCESS, issued, access_lifetime(settings))


def token_answer(request: Request, issued: c.SessionIssued) -> JSONResponse:
    """The OAuth2 fields at the top level (Swagger's Authorize reads them), and in ``data``."""
    access, expires = access_token(request.app.state.settings, issued)
    fields: dict[str, Any] = {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": _seconds_until(expires),
        "refresh_token": issued.refresh_token,
        "refresh_expires_at": iso(issued.refresh_expires_at),
    }
    data = fields | {
        "user_id": issued.user_id,
        "site_role": issued.site_role,
        "tier": issued.tier,
        "session_id": issued.session_id,
    }
    return JSONResponse(fields | {"status": "ok", "data": data}, headers=NO_STORE)


class _Holder(Protocol):
    """Whom a token is for: a signed-in principal, or a session just issued."""

    @property
    def user_id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def site_role(self) -> str: ...
    @property
    def tier(self) -> str: ...


def _mint(
    settings: Any, kind: tokens.Kind, holder: _Holder, lifetime: timedelta
) -> tuple[str, datetime]:
    return tokens.mint(
        jwt_secret(settings),
        kind=kind,
        user_id=holder.user_id,
        session_id=holder.session_id,
        site_role=holder.site_role,
        tier=holder.tier,
        lifetime=lifetime,
    )


def _seconds_until(moment: datetime) -> int:
    return max(0, int((moment - datetime.now(UTC)).total_seconds()))

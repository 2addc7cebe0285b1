"""Signing in and out of the pages, and who a page is for.

The pages keep the session in two HttpOnly, SameSite=Strict cookies: the access token (path
``/``, read by the same credential check as a ``Bearer`` header, ``auth/deps.py``) and the
refresh token (path ``/session``, sent only to the refresh route). ``page_user`` is what every
page declares: the signed-in principal; or, when the access token has expired but the refresh
token lives, a new session pair made on the spot (set on the page's answer by ``render``); or a
redirect to ``/login?next=…``. Scripts never see either token: they are not readable by the
page's JavaScript, and ``static/js/studio.js`` keeps a long-open page signed in by calling
``POST /session/refresh`` before the access token runs out.

Imports fastapi, the gateway's auth and the identity contracts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from contracts import identity as c
from contracts import new_id
from services.gateway.auth import routes
from services.gateway.auth.deps import (
    ACCESS_COOKIE,
    REFRESH_COOKIE,
    authenticate,
    current_principal,
    digest,
    from_pages,
)
from services.gateway.auth.principal import Principal
from services.gateway.envelope import REQUEST_ID, ApiError
from services.gateway.gateway import GatewayDep
from services.gateway.pages.templating import render
from services.gateway.readmodels import identity as read
from services.kernel.sqlite import session

router = APIRouter(include_in_schema=False)

REFRESH_PATH: Final = "/session"
#: Where a page goes after signing in when it was not sent from another page.
HOME: Final = "/projects"


class SignInRequired(Exception):
    """A page asked for without a live session: answered with a redirect to ``/login``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def local_path(candidate: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//elsewhere``)."""
    if not candidate or not candidate.startswith("/") or candidate.startswith("//"):
        return HOME
    if "\\" in candidate or any(ord(ch) < 32 for ch in candidate):
        return HOME
    return candidate


def login_url(next_path: str) -> str:
    return f"/login?next={quote(local_path(next_path), safe='/')}"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def session_cookies(request: Request, issued: c.SessionIssued) -> Callable[[Response], None]:
    """What sets a session's cookies on an answer."""
    access, expires = routes.access_token(request.app.state.settings, issued)
    refresh_expires = issued.refresh_expires_at
    secure = _secure(request)

    def apply(response: Response) -> None:
        response.set_cookie(
            ACCESS_COOKIE,
            access,
            expires=_http_date(expires),
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        response.set_cookie(
            REFRESH_COOKIE,
            issued.refresh_token,
            expires=_http_date(refresh_expires),
            path=REFRESH_PATH,
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    return apply


def _http_date(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def forget(response: Response) -> None:
    response.delete_cookie(ACCESS_COOKIE, path="/")
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_PATH)


async def _refreshed(request: Request, gateway: GatewayDep) -> c.SessionIssued | None:
    """The session renewed from the refresh cookie, or ``None`` when it cannot be."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        return None
    async with session(gateway.engine) as db:
        row = await read.session_by_refresh_hash(db, refresh_hash=digest(token))
    if row is None or row.ended:
        return None
    command = c.RefreshSession(
        user_id=row.user_id,
        session_id=row.id,
        refresh_token=token,
        actor=row.user_id,
        correlation_id=REQUEST_ID.get(),
    )
    try:
        return await routes.issue(gateway, request, command, c.Subjects.REFRESH_SESSION)
    except ApiError:
        return None


async def page_user(request: Request, gateway: GatewayDep) -> Principal:
    """The signed-in principal of a page (see the module's doc)."""
    try:
        return await current_principal(request, bearer=None, api_key=None)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise
    issued = await _refreshed(request, gateway)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if issued is None:
        raise SignInRequired(target)
    apply = session_cookies(request, issued)
    request.state.set_cookies = [apply]
    access, _ = routes.access_token(request.app.state.settings, issued)
    principal = await authenticate(request, bearer=access, api_key=None)
    request.state.principal = principal
    return principal


PageUser = Annotated[Principal, Depends(page_user)]


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form; a first-run hint says where the first admin's password comes from."""
    return render(request, "login.html", next=local_path(next), error=None, username="")


@router.post("/login")
async def login(
    request: Request,
    gateway: GatewayDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=c.TOKEN_MAX)] = "",
    next: Annotated[str, Form(max_length=2048)] = HOME,
) -> Response:
    """Sign in from the form: the session's cookies, and on to the page asked for."""
    user_id = username.strip().lower()
    target = local_path(next)
    if not user_id or not password:
        return _login_again(request, target, user_id, "Enter your username and password.", 422)
    command = c.Login(
        user_id=user_id,
        password=password,
        session_id=new_id(),
        actor=user_id,
        correlation_id=REQUEST_ID.get(),
    )
    try:
        issued = await routes.issue(gateway, request, command, c.Subjects.LOGIN)
    except ApiError as exc:
        message = exc.message if exc.status != 401 else c.INVALID_CREDENTIALS_MESSAGE
        return _login_again(request, target, user_id, message, exc.status)
    response = RedirectResponse(target, status_code=303)
    session_cookies(request, issued)(response)
    return response


def _login_again(
    request: Request, target: str, user_id: str, message: str, status: int
) -> Response:
    return render(
        request, "login.html", status=status, next=target, error=message, username=user_id
    )


@router.post("/logout")
async def logout(request: Request, gateway: GatewayDep) -> Response:
    """End the page's session (its tokens stop working at once) and forget its cookies.

    A plain form post carries no ``HX-Request``: signing out is allowed from the studio's own
    origin (a browser names it in ``Origin``), and the cookie's token is checked as a header's
    would be. Another site's post gets its cookies dropped by SameSite=Strict anyway."""
    principal = None
    token = request.cookies.get(ACCESS_COOKIE)
    if token and _same_origin(request):
        try:
            principal = await authenticate(request, bearer=token, api_key=None)
        except (HTTPException, ApiError):
            principal = None
    if principal is not None and principal.session_id is not None:
        command = c.EndSession(
            user_id=principal.user_id,
            session_id=principal.session_id,
            actor=principal.user_id,
            correlation_id=REQUEST_ID.get(),
        )
        await routes.send_settled(gateway, request, c.Subjects.END_SESSION, command)
    response: Response = RedirectResponse("/login", status_code=303)
    if request.headers.get("hx-request", "").lower() == "true":
        response = Response(status_code=204, headers={"HX-Redirect": "/login"})
    forget(response)
    return response


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host", "")


@router.post(f"{REFRESH_PATH}/refresh")
async def refresh(request: Request, gateway: GatewayDep) -> Response:
    """Renew the page's session before its access token runs out (``studio.js`` calls it)."""
    if not from_pages(request):
        raise ApiError("FORBIDDEN", "only the studio's pages renew their session", status=403)
    issued = await _refreshed(request, gateway)
    if issued is None:
        response = Response(status_code=401, headers={"HX-Redirect": login_url("/projects")})
        forget(response)
        return response
    response = Response(status_code=204)
    session_cookies(request, issued)(response)
    return response

"""Keeps an open SSE or WebSocket stream honest: it is served only while its caller may still
read it, checked every few seconds, and ends when that stops.

A stream opened with an access token (a header) ends when that token expires; one opened with an
API key, when the key expires or is revoked. A stream token (``?access_token=``, two minutes) is
only the ticket that opens the stream: the stream then lives as long as the sign-in session the
ticket was cut from, so a training followed for an hour is not cut every two minutes. Every
stream ends at once (within ``CHECK_EVERY_S``) when its session ends (sign-out, a password
change), its user is disabled, or its caller loses the viewer role in the project.

Imports the principal, the access rules and the identity read model; no route.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from services.gateway.access import credentials, principal_of
from services.gateway.auth import deps
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ApiError
from services.gateway.limits import Slot, stream_slot
from services.gateway.readmodels import identity
from services.kernel.sqlite import session

T = TypeVar("T")
#: How often an open stream checks that its caller may still read it.
CHECK_EVERY_S = 3.0
UNAUTHENTICATED = "UNAUTHENTICATED"
#: The WebSocket close code of a stream whose credential ended (4000 + HTTP's 401).
CLOSE_UNAUTHENTICATED = 4401


@dataclass
class Ended:
    """Why a guarded stream was ended: a code and a message, as the error envelope has them."""

    code: str
    message: str
    status: int


@dataclass
class Guard:
    """Who opened a stream, with what, and what they must still be allowed to read."""

    conn: HTTPConnection
    principal: Principal
    #: Raises ``ApiError`` when the caller may no longer read the stream's resources.
    recheck: Callable[[], Awaitable[object]]
    every: float = CHECK_EVERY_S
    ended: Ended | None = None
    #: The caller's stream place (``STUDIO_STREAMS_PER_USER``), given back when it ends.
    slot: Slot | None = None
    _checked: float = field(default_factory=time.monotonic)

    async def allowed(self) -> bool:
        """Whether the stream may go on; ``ended`` says why not."""
        self._checked = time.monotonic()
        try:
            await self._authenticated()
            await self.recheck()
        except HTTPException as exc:
            self.ended = Ended(UNAUTHENTICATED, str(exc.detail), exc.status_code)
        except ApiError as err:
            self.ended = Ended(err.code, err.message, err.status)
        return self.ended is None

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.every

    async def _authenticated(self) -> None:
        principal = self.principal
        if principal.via == "stream":
            await self._session_stands()
            return
        if principal.expires_at is not None and _utc(principal.expires_at) <= datetime.now(UTC):
            raise deps.unauthenticated("the credential this stream was opened with has expired")
        # The credential it was opened with, checked again as a new request would be.
        bearer, api_key = credentials(self.conn)
        await deps.authenticate(self.conn, bearer=bearer, api_key=api_key)

    async def _session_stands(self) -> None:
        ended = deps.unauthenticated("the session this stream was opened in has ended")
        async with session(self.conn.app.state.gateway.engine) as db:
            row = await identity.get_session(db, session_id=self.principal.session_id or "")
            user = await identity.get_user(db, user_id=self.principal.user_id)
        if row is None or row.ended or user is None or user.disabled:
            raise ended
        if _utc(row.refresh_expires_at) <= datetime.now(UTC):
            raise ended


async def open_guard(conn: HTTPConnection, recheck: Callable[[], Awaitable[object]]) -> Guard:
    """Authenticate ``conn`` and run ``recheck`` (the route's access check) once, both raising
    as a route would; the guard then runs ``recheck`` again at every check."""
    principal = await principal_of(conn)
    await recheck()
    return Guard(conn, principal, recheck, slot=stream_slot(conn))


async def guarded(source: AsyncIterator[T], guard: Guard) -> AsyncIterator[T]:
    """``source``'s items while ``guard`` allows it; it stops (and closes ``source``) within
    ``guard.every`` seconds of the caller losing the right to read it, ``guard.ended`` set."""
    items = source.__aiter__()
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(items))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=guard.every)
            if pending in done:
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return
                yield item
                pending = asyncio.ensure_future(anext(items))
            if guard.due() and not await guard.allowed():
                return
    finally:
        if guard.slot is not None:
            guard.slot.release()
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await pending
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def guarded_sse(source: AsyncIterator[bytes], guard: Guard) -> AsyncIterator[bytes]:
    """An SSE body under ``guard``: when the caller loses the right to read it, a last
    ``closed`` event says why (``code``, ``message``) and the stream ends."""
    async for chunk in guarded(source, guard):
        yield chunk
    if guard.ended is not None:
        body = {"code": guard.ended.code, "message": guard.ended.message}
        yield b"event: closed\ndata: " + msgspec.json.encode(body) + b"\n\n"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)

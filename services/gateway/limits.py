"""How much one caller may ask of the gateway: request rates, page sizes, open streams, running
imports and queued runs, each capped by a setting.

- **Rates** (moving windows in this gateway's memory, written as the ``limits`` library parses
  them): a signed-in caller is counted per user at their tier's rate (``STUDIO_RATE_LIMIT_FREE``
  ...), anyone else per client IP (``STUDIO_RATE_LIMIT_ANONYMOUS``); sign-in attempts are also
  counted per client IP and username (``STUDIO_LOGIN_RATE_LIMIT``). Over a limit: 429
  ``RATE_LIMITED`` with ``Retry-After``. ``/health`` and ``/metrics`` are not counted: monitors
  poll them. Each window keeps the times of its hits in a deque (O(1) a request, on the event
  loop): the library's in-memory storage inserted at the front of a list as long as the limit
  and started a thread every 10 ms to expire it, which cost more than the rest of a request.
- **Pages**: ``?limit=`` above ``STUDIO_PAGE_SIZE_MAX`` is refused 422.
- **Streams**: a caller holds at most ``STUDIO_STREAMS_PER_USER`` open SSE streams and WebSockets;
  a stream route takes a ``stream_slot`` before it answers and gives it back when it ends.
- **Imports, queued runs**: starting an import while ``STUDIO_IMPORTS_PER_USER`` of one's imports
  run, or queueing a run while ``STUDIO_QUEUED_RUNS_PER_USER`` of one's runs wait, is refused 429
  (``TOO_MANY_IMPORTS``, ``TOO_MANY_QUEUED_RUNS``), counted from the read model by actor.

Everything here is per gateway process: with N gateways behind a balancer a caller gets up to N
times a rate (the README says why). Imports the ``limits`` library, the principal, the access
helpers and the read models' counting queries.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse_many
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from contracts import common
from services.gateway import envelope
from services.gateway.access import principal_of
from services.gateway.auth.principal import Principal
from services.gateway.envelope import ApiError
from services.gateway.readmodels import quotas
from services.kernel.settings import Settings
from services.kernel.sqlite import session

T = TypeVar("T")
RATE_LIMITED: Final = "RATE_LIMITED"
TOO_MANY_STREAMS: Final = "TOO_MANY_STREAMS"
TOO_MANY_IMPORTS: Final = "TOO_MANY_IMPORTS"
TOO_MANY_QUEUED_RUNS: Final = "TOO_MANY_QUEUED_RUNS"
#: Polled by monitors and supervisors: never rate-limited.
UNCOUNTED: Final = frozenset({"/health", "/metrics"})
LOGIN_ROUTES: Final = frozenset({"/api/v1/auth/token", "/api/auth/token"})
API_PREFIXES: Final = ("/api/v1", "/api")


class RateLimited(Exception):
    """Answered 429 ``RATE_LIMITED`` with ``Retry-After`` (whole seconds)."""

    def __init__(self, message: str, retry_after: int, limit: RateLimitItem) -> None:
        super().__init__(message)
        self.message, self.retry_after, self.limit = message, retry_after, limit


async def _rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    response = envelope.error(429, RATE_LIMITED, exc.message)
    response.headers["Retry-After"] = str(exc.retry_after)
    response.headers["RateLimit-Policy"] = f"{exc.limit.amount};w={exc.limit.get_expiry()}"
    return response


class Windows:
    """Exact moving windows in this process's memory: per key and limit, the times (monotonic)
    of the hits still inside the window, oldest first, at most the limit's amount of them.
    Windows whose hits have all expired are dropped once per ``SWEEP_S``."""

    SWEEP_S: Final = 60.0

    def __init__(self) -> None:
        self._hits: dict[tuple[str, int, int], deque[float]] = {}
        self._swept = time.monotonic()

    def wait(self, item: RateLimitItem, key: str, now: float) -> float:
        """0 when ``key`` may make one more hit of ``item`` now, else the seconds until it may."""
        expiry = item.get_expiry()
        hits = self._hits.get((key, item.amount, expiry))
        if hits is None:
            return 0.0
        while hits and hits[0] < now - expiry:
            hits.popleft()
        return 0.0 if len(hits) < item.amount else hits[0] + expiry - now

    def hit(self, item: RateLimitItem, key: str, now: float) -> None:
        window = (key, item.amount, item.get_expiry())
        hits = self._hits.get(window)
        if hits is None:
            hits = self._hits[window] = deque()
        hits.append(now)
        if len(hits) > item.amount:  # never more than the window can hold
            hits.popleft()
        if now - self._swept > self.SWEEP_S:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for window, hits in list(self._hits.items()):
            if not hits or hits[-1] < now - window[2]:
                del self._hits[window]


class Rates:
    """Moving-window counters in this process's memory, one per key and limit."""

    def __init__(self, settings: Settings) -> None:
        self.window = Windows()
        self.tiers = {tier: parse_many(rate) for tier, rate in settings.rate_limits.items()}
        self.login = parse_many(settings.login_rate_limit)

    def of(self, principal: Principal | None) -> list[RateLimitItem]:
        if principal is None:
            return self.tiers["anonymous"]
        return self.tiers.get(principal.tier, self.tiers["free"])

    def hit(self, items: list[RateLimitItem], key: str, what: str) -> None:
        """Counts one request against every item, or raises ``RateLimited`` counting none."""
        now = time.monotonic()
        for item in items:
            if wait := self.window.wait(item, key, now):
                retry = max(1, math.ceil(wait))
                raise RateLimited(f"{what}: at most {item}; try again in {retry} s", retry, item)
        for item in items:
            self.window.hit(item, key, now)


@dataclass
class Slots:
    """Open streams per caller, counted in this process."""

    cap: int
    open: Counter[str] = field(default_factory=Counter)

    def take(self, key: str) -> Slot:
        if self.open[key] >= self.cap:
            raise ApiError(
                TOO_MANY_STREAMS,
                f"at most {self.cap} open streams per user: close one first",
                status=429,
            )
        self.open[key] += 1
        return Slot(self, key)


class Slot:
    """One open stream's place; given back once, by ``release``, ``with`` or when collected
    (a stream answered before its body ever ran still gives its place back)."""

    def __init__(self, slots: Slots, key: str) -> None:
        self._slots: Slots | None = slots
        self.key = key

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.open[self.key] -= 1
            if slots.open[self.key] <= 0:
                del slots.open[self.key]

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def caller_key(conn: HTTPConnection, principal: Principal | None) -> str:
    """Whose counters a request uses: the user's, else its client IP's."""
    if principal is not None:
        return f"user:{principal.user_id}"
    return f"ip:{conn.client.host if conn.client else 'unknown'}"


def stream_slot(conn: HTTPConnection) -> Slot:
    """Takes one of the caller's stream places (429 ``TOO_MANY_STREAMS`` when none is free);
    call it after authenticating the stream, and give the slot back when the stream ends:
    ``with stream_slot(ws): ...`` for a WebSocket, ``held(body, slot)`` for an SSE body."""
    slots: Slots = conn.app.state.stream_slots
    return slots.take(caller_key(conn, getattr(conn.state, "principal", None)))


async def held(source: AsyncIterator[T], slot: Slot) -> AsyncIterator[T]:
    """``source``'s items; ``slot`` is given back when the stream ends, however it ends."""
    try:
        async for item in source:
            yield item
    finally:
        slot.release()


async def _principal(conn: HTTPConnection) -> Principal | None:
    try:
        return await principal_of(conn)
    except (HTTPException, ApiError):
        return None  # counted by IP; the route's own check answers 401 if it needs one


def _route(conn: HTTPConnection) -> str:
    path = str(getattr(conn.scope.get("route"), "path", conn.scope["path"]))
    for prefix in API_PREFIXES:
        if path.startswith(prefix + "/"):
            return path.removeprefix(prefix)
    return path


async def _username(conn: HTTPConnection) -> str:
    if not isinstance(conn, Request):
        return ""
    try:
        form = await conn.form()
    except Exception:  # a malformed form is the route's to refuse; it counts as no name
        return ""
    name = form.get("username")
    return name.strip().lower()[:100] if isinstance(name, str) else ""


def _page(conn: HTTPConnection, cap: int) -> None:
    raw = conn.query_params.get("limit", "")
    if raw.isdigit() and int(raw) > cap:
        message = f"limit: at most {cap} items per page"
        raise ApiError(common.VALIDATION_ERROR, message, field="limit", status=422)


async def _imports(db: AsyncSession, user: str) -> int:
    return await quotas.running_imports_of(db, actor=user)


async def _queued_runs(db: AsyncSession, user: str) -> int:
    return await quotas.queued_runs_of(db, actor=user)


#: The routes that add to a per-user count: (method, route) → (count, its setting, code).
QUOTAS: Final[dict[tuple[str, str], tuple[Callable[..., Any], str, str]]] = {
    ("POST", "/datasets/import/local"): (_imports, "imports_per_user", TOO_MANY_IMPORTS),
    ("POST", "/datasets/import/upload"): (_imports, "imports_per_user", TOO_MANY_IMPORTS),
    ("POST", "/training/run"): (_queued_runs, "queued_runs_per_user", TOO_MANY_QUEUED_RUNS),
    ("POST", "/training/runs/{run_id}/resume"): (
        _queued_runs,
        "queued_runs_per_user",
        TOO_MANY_QUEUED_RUNS,
    ),
}


async def _quota(conn: HTTPConnection, route: str, principal: Principal | None) -> None:
    quota = QUOTAS.get((conn.scope.get("method", ""), route))
    if quota is None or principal is None:
        return
    count, setting, code = quota
    settings: Settings = conn.app.state.settings
    cap: int = getattr(settings, setting)
    async with session(conn.app.state.gateway.engine) as db:
        now = await count(db, principal.user_id)
    if now >= cap:
        noun = "imports running" if code == TOO_MANY_IMPORTS else "runs queued"
        raise ApiError(code, f"at most {cap} {noun} per user: wait for one to end", status=429)


async def guard(conn: HTTPConnection) -> None:
    """The app-wide dependency: counts the request against its caller's rate, then checks the
    page size and the caller's imports and queued runs. A WebSocket is capped by its slot."""
    if conn.scope["type"] != "http" or conn.scope["path"] in UNCOUNTED:
        return
    rates: Rates = conn.app.state.rates
    principal = await _principal(conn)
    key = caller_key(conn, principal)
    rates.hit(rates.of(principal), key, "too many requests")
    route = _route(conn)
    if conn.scope["path"] in LOGIN_ROUTES and conn.scope.get("method") == "POST":
        rates.hit(rates.login, f"login:{key}:{await _username(conn)}", "too many sign-in attempts")
    settings: Settings = conn.app.state.settings
    _page(conn, settings.page_size_max)
    await _quota(conn, route, principal)


def install(app: FastAPI, settings: Settings) -> None:
    """The counters on ``app.state`` and the 429 answer; ``guard`` is the app's dependency."""
    app.state.rates = Rates(settings)
    app.state.stream_slots = Slots(settings.streams_per_user)
    app.add_exception_handler(RateLimited, _rate_limited)

"""The one place the client speaks HTTP: credentials, the envelope, retries, refresh.

``Transport`` wraps an ``httpx.AsyncClient``. Every call says how it may be retried
(``Retry``): a read or a POST the gateway deduplicates by its ``Idempotency-Key`` is retried on
503, 429 (after ``Retry-After``) and any connection failure; any other POST only where the
request cannot have reached the gateway (a refused connection, a 429 from the rate limiter).
Every POST carries an ``Idempotency-Key`` made once per call and sent again on each retry.
A 401 of a session signed in with ``auth.login`` refreshes the session once and tries again.

Imports httpx, msgspec and the package's own errors and models only.
"""

from __future__ import annotations

import asyncio
import enum
import random
import uuid
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import msgspec

from studio_client.errors import StudioError, Unavailable, error_from
from studio_client.models import Session

__all__ = ["API_PREFIX", "Retry", "RetryPolicy", "Transport", "api_root"]

API_PREFIX = "/api/v1"
USER_AGENT = "studio-client/1"
T = TypeVar("T")
Body = Callable[[], dict[str, Any]]


class Retry(enum.Enum):
    #: A read, or a POST the gateway deduplicates by its Idempotency-Key: retry on 503, 429
    #: and every connection failure.
    IDEMPOTENT = "idempotent"
    #: A POST the gateway would run twice: retry only what cannot have reached it.
    UNSAFE = "unsafe"


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: up to ``attempts`` tries, ``backoff`` doubling up to
    ``max_backoff`` (with jitter), and never waiting longer than ``max_retry_after`` for a
    ``Retry-After``. The defaults ride out about 8 to 15 s of outage: a gateway or NATS
    restarting."""

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)


def api_root(base_url: str) -> str:
    """``http://host:8000``, ``…/api`` or ``…/api/v1`` → ``http://host:8000/api/v1``."""
    root = base_url.rstrip("/")
    for suffix in (API_PREFIX, "/api"):
        if root.endswith(suffix):
            root = root[: -len(suffix)]
            break
    return root + API_PREFIX


def retry_after_of(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def error_of(response: httpx.Response) -> StudioError:
    """The typed error of a refusal (its body already read)."""
    try:
        body = msgspec.json.decode(response.content) if response.content else None
    except msgspec.DecodeError:
        body = None
    return error_from(
        response.status_code,
        body,
        request_id=response.headers.get("x-request-id"),
        retry_after=retry_after_of(response),
    )


def _never_sent(exc: httpx.TransportError) -> bool:
    """A failure before any byte of the request left: safe to retry whatever the method."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def _again(response: httpx.Response, retry: Retry, attempt: int) -> bool:
    """Whether ``response`` is a passing refusal worth another try."""
    status = response.status_code
    if status == 429:  # the rate limiter refuses before anything runs
        return True
    if retry is not Retry.IDEMPOTENT:
        return False
    if status in (502, 503, 504):
        return True
    # Our own earlier try still running at the gateway (a keyed POST whose connection broke):
    # its answer will be replayed once it is done. A replayed 409 is a real conflict.
    return status == 409 and attempt > 0 and "idempotent-replayed" not in response.headers


class Transport:
    """Credentials, the envelope and retries around one ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.root = api_root(base_url)
        self.token, self.api_key = token, api_key
        self.session: Session | None = None
        self.policy = retry or RetryPolicy()
        self.timeout = timeout
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
        )
        self._refreshing: asyncio.Lock | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    def url(self, path: str) -> str:
        return self.root + path

    def credentials(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.api_key:
            return {"X-API-Key": self.api_key}
        return {}

    def signed_in(self, session: Session) -> None:
        self.session, self.token = session, session.access_token

    # --- one JSON call ----------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        into: type[T],
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry: Retry = Retry.IDEMPOTENT,
        **kwargs: Any,
    ) -> T:
        """``data`` of the envelope of ``method path``, decoded into ``into``."""
        response = await self.send(method, path, params=params, json=json, retry=retry, **kwargs)
        return self.data(response, into)

    def data(self, response: httpx.Response, into: type[T]) -> T:
        if response.status_code >= 400:
            raise error_of(response)
        if response.status_code == 204 or not response.content:
            return msgspec.convert(None, into)
        try:
            envelope = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise StudioError(
                "BAD_ANSWER",
                "the answer is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from None
        data = envelope.get("data") if isinstance(envelope, dict) else envelope
        return msgspec.convert(data, into, strict=False)

    async def send(
        self,
        method: str,
        path: str,
        *,
        retry: Retry = Retry.IDEMPOTENT,
        content: Callable[[], Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send until answered, as ``retry`` allows; the answer's body is read. ``content``
        makes the request body afresh for each try (a stream from disk cannot be replayed)."""
        extra = dict(headers or {})
        if method == "POST":
            extra.setdefault("Idempotency-Key", uuid.uuid4().hex)
        refreshed = False
        attempt = 0
        while True:
            body = {"content": content()} if content is not None else {}
            try:
                response = await self.http.request(
                    method,
                    self.url(path),
                    headers={**self.credentials(), **extra},
                    **body,
                    **kwargs,
                )
            except httpx.TransportError as exc:
                if attempt + 1 >= self.policy.attempts or not (
                    retry is Retry.IDEMPOTENT or _never_sent(exc)
                ):
                    raise Unavailable(
                        "UNREACHABLE", f"no answer from {self.root}: {exc!r}"
                    ) from exc
                await asyncio.sleep(self.policy.delay(attempt))
                attempt += 1
                continue
            if response.status_code == 401 and not refreshed and await self.refresh():
                refreshed = True
                continue
            if attempt + 1 < self.policy.attempts and _again(response, retry, attempt):
                await asyncio.sleep(self.policy.delay(attempt, retry_after_of(response)))
                attempt += 1
                continue
            return response

    # --- a streamed answer ------------------------------------------------------------------

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> Any:
        """One streamed request, no retries (the caller decides); the read timeout is long
        enough for the gateway's keepalives."""
        headers = {**self.credentials(), **kwargs.pop("headers", {})}
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 60.0))
        request = self.http.build_request(
            method, self.url(path), headers=headers, timeout=timeout, **kwargs
        )
        response = await self.http.send(request, stream=True)
        try:
            if response.status_code == 401 and await self.refresh():
                await response.aclose()
                headers.update(self.credentials())
                request = self.http.build_request(
                    method, self.url(path), headers=headers, timeout=timeout, **kwargs
                )
                response = await self.http.send(request, stream=True)
            yield response
        finally:
            await response.aclose()

    # --- sessions ---------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Trade the session's refresh token for new tokens; False without one, or when the
        studio refused it (the session is then forgotten) or could not be reached."""
        session = self.session
        if session is None or not session.refresh_token:
            return False
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if self.session is not session:  # another call refreshed it (or lost it) meanwhile
                return self.session is not None
            try:
                response = await self.http.post(
                    self.url("/auth/refresh"), json={"refresh_token": session.refresh_token}
                )
            except httpx.TransportError:
                return False
            if response.status_code in (400, 401, 422):  # the refresh token is dead
                self.session = None
            if response.status_code != 200:
                return False
            self.signed_in(self.data(response, Session))
            return True

    async def login(self, user: str, password: str) -> Session:
        """The OAuth2 password flow; the session's token is used from then on."""
        self.session = None  # a refused password must not be taken for an expired session
        response = await self.send(
            "POST",
            "/auth/token",
            data={"username": user, "password": password},
            retry=Retry.IDEMPOTENT,  # signing in twice makes two sessions, harmlessly
        )
        session = self.data(response, Session)
        self.signed_in(session)
        return session

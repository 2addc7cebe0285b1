"""An experiment's WebSocket (``/ws/experiments/{id}``), listened to through broken connections.

``listen`` opens the socket with the client's credential (as headers), hands each
``{"type", "payload"}`` text frame to a callback as a ``SocketMessage``, and ends when the studio
closes the socket (the experiment's end) or the callback returns True. A connection that breaks
(or a gateway answering 502/503/504 while it restarts) is opened again with ``?last_event_id=``
the sequence of the last stored event delivered: the studio sends a fresh ``snapshot``, then
what was missed, and a stored event already delivered is never delivered twice. An ``error``
frame (with its close code, 4000 + the HTTP status) raises the typed error; a signed-in
session whose access token expired is refreshed, once in a row. It gives up with
``Unavailable`` when no connection could be made for ``reconnect_for`` seconds on end.

Imports msgspec and the package's own modules; the ``websockets`` package only inside
``listen``, so that the client does not need it for anything else.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from studio_client.errors import StudioError, Unauthorized, Unavailable, error_from
from studio_client.models import SocketMessage
from studio_client.streams import PASSING, RECONNECT_MAX_S
from studio_client.transport import API_PREFIX, USER_AGENT, Transport

__all__ = ["listen", "socket_url"]

#: The largest frame taken (an experiment's snapshot with many trials).
MAX_FRAME = 16 * 1024 * 1024
Callback = Callable[[SocketMessage], Any]


def socket_url(root: str, path: str, last_event_id: int | None = None) -> str:
    """``http://host/api/v1`` and ``/ws/x`` → ``ws://host/ws/x`` (``wss`` for https)."""
    scheme, _, rest = root.removesuffix(API_PREFIX).partition("://")
    url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"
    return url if last_event_id is None else f"{url}?last_event_id={last_event_id}"


@dataclass
class _Listener:
    """What has been handed to the callback: how many messages, and the last stored one."""

    callback: Callback
    last: int | None = None
    got: int = 0
    stopped: bool = False

    async def take(self, message: SocketMessage) -> None:
        # A snapshot's ``sequence`` is the read model's position, not a stored event's.
        sequence = message.payload.get("sequence") if message.type != "snapshot" else None
        if isinstance(sequence, int):
            if self.last is not None and sequence <= self.last:
                return  # replayed after a reconnect: delivered already
            self.last = sequence
        self.got += 1
        answer = self.callback(message)
        if inspect.isawaitable(answer):
            answer = await answer
        self.stopped = answer is True


class _Refused(Exception):
    def __init__(self, error: StudioError) -> None:
        self.error = error


async def listen(
    transport: Transport,
    path: str,
    callback: Callback,
    *,
    last_event_id: int | None = None,
    reconnect_for: float = 120.0,
) -> int:
    """Hand every message of the socket at ``path`` to ``callback`` until its end; returns how
    many messages were handed over."""
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("connect_websocket needs `pip install websockets`") from exc
    listener = _Listener(callback, last_event_id)
    failing_since: float | None = None
    attempt, renewed_at = 0, -1  # renewed_at: the count when the session was last refreshed
    while True:
        url = socket_url(transport.root, path, listener.last)
        before = listener.got
        try:
            await _connection(connect, url, transport.credentials(), listener)
            return listener.got
        except _Refused as refused:
            # The access token expired (at the start, or while listening): refresh, go on.
            if not isinstance(refused.error, Unauthorized) or renewed_at == listener.got:
                raise refused.error from None
            if not await transport.refresh():
                raise refused.error from None
            renewed_at = listener.got
            continue
        except InvalidStatus as exc:
            if exc.response.status_code not in PASSING:
                raise _handshake_error(exc) from None
            problem: Exception = exc
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            problem = exc
        if listener.got > before:
            failing_since, attempt = None, 0
        now = time.monotonic()
        failing_since = failing_since or now
        if now - failing_since > reconnect_for:
            raise Unavailable("UNREACHABLE", f"the socket {url} could not be resumed: {problem!r}")
        await asyncio.sleep(min(transport.policy.delay(attempt), RECONNECT_MAX_S))
        attempt += 1


async def _connection(connect: Any, url: str, headers: dict[str, str], listener: _Listener) -> None:
    """One connection, to its close. ``_Refused`` after an ``error`` frame or a close code of
    the studio's own (4000 + the HTTP status); ``ConnectionError`` for any other abnormal
    close (the gateway restarting: 1012), so that it is opened again."""
    from websockets.exceptions import ConnectionClosedError

    refusal: dict[str, Any] | None = None
    async with connect(
        url, additional_headers=headers, user_agent_header=USER_AGENT, max_size=MAX_FRAME
    ) as socket:
        try:
            async for raw in socket:
                message = msgspec.json.decode(raw, type=SocketMessage)
                if message.type == "error":
                    refusal = message.payload
                    continue
                await listener.take(message)
                if listener.stopped:
                    return
        except ConnectionClosedError as exc:
            if exc.rcvd is None:  # no close frame: the connection broke
                raise
        code = socket.close_code or 1006
    if code in (1000, 1001) and refusal is None:
        return
    if refusal is None and not 4000 <= code < 5000:
        raise ConnectionError(f"the socket closed with {code}")
    status = code - 4000 if 4000 <= code < 5000 else 500
    raise _Refused(error_from(status, {"error": refusal or {"code": f"CLOSED_{code}"}}))


def _handshake_error(exc: Any) -> StudioError:
    response = exc.response
    try:
        body = msgspec.json.decode(response.body) if response.body else None
    except msgspec.DecodeError:
        body = None
    return error_from(response.status_code, body, request_id=response.headers.get("x-request-id"))

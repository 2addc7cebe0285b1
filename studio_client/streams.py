"""Following live work over Server-Sent Events, through dropped connections and gateway
restarts, with no gap and no repeat.

The gateway gives every stored event of a run an ``id`` (its stream sequence) and resumes
after the ``Last-Event-ID`` a client sends; live progress carries no id. ``follow`` reconnects
whenever the stream breaks before its end (a connection lost, a 502/503, a gateway restarted),
sending the last id it saw, drops any id it has already delivered, and stops after an event
named in ``ends`` (``complete``, ``error``), or when the gateway answers 204 (the client has the
end already). A ``closed`` event (access withdrawn) raises ``StreamEnded``, unless it is the
access token that expired and the client's session could be refreshed: then it reconnects.
It gives up with ``Unavailable`` when no connection could be made for ``reconnect_for``
seconds on end. The pages' ``Studio.follow`` (studio.js) keeps the same rules.

Imports httpx, msgspec and the package's transport, models and errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field

import httpx
import msgspec

from studio_client.errors import StreamEnded, StudioError, Unavailable
from studio_client.models import StreamEvent
from studio_client.transport import Transport, error_of

__all__ = ["SSEParser", "follow"]

ENDS = ("complete", "error")
#: The longest wait between two tries to reconnect (as the pages' EventSource waits).
RECONNECT_MAX_S = 2.0
#: Statuses a stream is tried again after; any other refusal is raised.
PASSING = (429, 502, 503, 504)


@dataclass
class SSEParser:
    """The event-stream format (WHATWG HTML §9.2), line by line. An event's ``id`` is the one
    its own lines give: an event without one (live progress) is not taken for a repeat of
    the last stored event."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> StreamEvent | None:
        """The event that ``line`` completes (a blank line), else ``None``."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keepalive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> StreamEvent | None:
        event, data, raw_id = self._event or "message", self._data, self._id
        self._event, self._data, self._id = "", [], None
        if not data and raw_id is None and event == "message":
            return None
        text = "\n".join(data)
        try:
            decoded = msgspec.json.decode(text) if text else None
        except msgspec.DecodeError:
            decoded = text
        seq = int(raw_id) if raw_id is not None and raw_id.isdigit() else None
        return StreamEvent(event=event, data=decoded, id=seq)


def parse(lines: Iterable[str]) -> list[StreamEvent]:
    """Every complete event of ``lines`` (for tests and simple uses)."""
    parser = SSEParser()
    return [e for line in lines if (e := parser.feed(line)) is not None]


class _Dropped(Exception):
    """The stream broke before its end: connect again."""


@dataclass
class _Position:
    """What a follower has delivered: the last id, and every id (never delivered twice)."""

    last: int | None = None
    seen: set[int] = field(default_factory=set)

    def fresh(self, event: StreamEvent) -> bool:
        if event.id is None:
            return True
        if event.id in self.seen:
            return False
        self.seen.add(event.id)
        self.last = event.id if self.last is None else max(self.last, event.id)
        return True


async def follow(
    transport: Transport,
    path: str,
    *,
    ends: tuple[str, ...] = ENDS,
    after: int | None = None,
    reconnect_for: float = 120.0,
) -> AsyncGenerator[StreamEvent, None]:
    """The events of the SSE route ``path``, through reconnects, until one named in ``ends``
    (delivered too) or the gateway says the stream is over; ``after``: an id already seen."""
    position = _Position(last=after)
    failing_since: float | None = None
    attempt = 0
    renewed = False  # the session was refreshed, and no event has come since
    while True:
        try:
            async with aclosing(_connect(transport, path, position)) as events:
                async for event in events:
                    failing_since, attempt = None, 0
                    if event.event == "_open":
                        continue
                    renewed = False
                    yield event
                    if event.event in ends:
                        return
            return  # 204: the client has the end already
        except StreamEnded as ended:
            # The access token a stream was opened with expired: a session signed in here
            # refreshes it and takes the stream up where it was (once in a row: a stream
            # closed again at once is closed for another reason).
            if renewed or ended.code != "UNAUTHENTICATED" or not await transport.refresh():
                raise
            renewed = True
        except (_Dropped, httpx.TransportError) as exc:
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > reconnect_for:
                raise Unavailable(
                    "UNREACHABLE", f"the stream {path} could not be resumed: {exc!r}"
                ) from exc
            await asyncio.sleep(min(transport.policy.delay(attempt), RECONNECT_MAX_S))
            attempt += 1


async def _connect(
    transport: Transport, path: str, position: _Position
) -> AsyncGenerator[StreamEvent, None]:
    """One connection: an ``_open`` marker once it is answered 200, then its fresh events;
    ``_Dropped`` when it ends (or fails passingly) before the stream's end; nothing on 204."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if position.last is not None:
        headers["Last-Event-ID"] = str(position.last)
    async with transport.stream("GET", path, headers=headers) as response:
        if response.status_code == 204:
            return
        if response.status_code != 200:
            await response.aread()
            error = error_of(response)
            if response.status_code in PASSING:
                raise _Dropped(str(error))
            raise error
        yield StreamEvent(event="_open")
        parser = SSEParser()
        async for line in response.aiter_lines():
            event = parser.feed(line)
            if event is None or not position.fresh(event):
                continue
            if event.event == "closed":
                raise _ended(event)
            yield event
    raise _Dropped("the stream ended before its end")


def _ended(event: StreamEvent) -> StudioError:
    data = event.data if isinstance(event.data, dict) else {}
    return StreamEnded(
        str(data.get("code") or "STREAM_CLOSED"),
        str(data.get("message") or "the gateway closed the stream"),
    )

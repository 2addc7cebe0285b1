"""Server-Sent Events straight from an aggregate's subject, resumable by ``Last-Event-ID``.

Each event's stream sequence is its SSE ``id``, so a reconnecting client that sends the last id
it saw receives exactly what it missed, then live events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api

from contracts import common
from services.gateway.envelope import ApiError

KEEPALIVE_S = 15.0


def last_event_id(request: Request) -> int:
    """The sequence a client has seen: the ``Last-Event-ID`` header, or ``?last_event_id=``."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    # ASCII digits ("²" is a digit to str.isdigit, not to int) and no more than a sequence has.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ApiError(
            common.VALIDATION_ERROR,
            "Last-Event-ID must be a stream sequence number",
            field="Last-Event-ID",
        )
    return int(raw)


def event_name(tag: str) -> str:
    """``projects.project_renamed.v1`` → ``project_renamed``."""
    parts = tag.split(".")
    return parts[1] if len(parts) == 3 else tag


def format_sse(seq: int, name: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name.encode(), data)


async def events(js: JetStreamContext, subject: str, after: int) -> AsyncIterator[bytes]:
    sub = await js.subscribe(
        subject,
        ordered_consumer=True,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
        ),
    )
    try:
        yield b"retry: 2000\n\n"
        while True:
            try:
                msg = await sub.next_msg(timeout=KEEPALIVE_S)
            except (TimeoutError, NatsTimeoutError):
                yield b": keepalive\n\n"
                continue
            tag = (msg.headers or {}).get("Studio-Event-Type", "message")
            yield format_sse(msg.metadata.sequence.stream, event_name(tag), msg.data)
    finally:
        await sub.unsubscribe()


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    """An SSE answer of ``body``: never cached, never buffered by a proxy."""
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

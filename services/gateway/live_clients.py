"""``studio_live_clients{kind}``: the SSE streams and WebSockets the gateway serves now.

An ASGI middleware, so that every stream is counted whichever route serves it: an HTTP answer
whose ``Content-Type`` is ``text/event-stream`` counts as ``sse`` from its first byte, a
WebSocket as ``websocket`` from its accept, each until its route returns: the count is given
back in a ``finally``, whether the stream ended, its client left, or the route failed.
Imports the kernel's telemetry only.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kernel.telemetry import LIVE_CLIENTS

SSE_TYPE = b"text/event-stream"


def _kind(message: Message) -> str | None:
    """The live client a message of the app opens, if it opens one."""
    if message["type"] == "websocket.accept":
        return "websocket"
    if message["type"] == "http.response.start":
        for name, value in message.get("headers", ()):
            if name.lower() == b"content-type" and value.lower().startswith(SSE_TYPE):
                return "sse"
    return None


class LiveClients:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        opened: str | None = None

        async def watch(message: Message) -> None:
            nonlocal opened
            if opened is None and (kind := _kind(message)) is not None:
                opened = kind
                LIVE_CLIENTS.labels(kind).inc()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if opened is not None:
                LIVE_CLIENTS.labels(opened).dec()

"""``studio_live_clients{kind}``: an SSE answer and an accepted WebSocket count while their
route runs, and are always given back: at the end, when the client is gone (the send fails),
and when the route fails. A plain answer and a refused WebSocket never count."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.gateway.live_clients import LiveClients

SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
}
JSON_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}


def live(kind: str) -> float:
    return REGISTRY.get_sample_value("studio_live_clients", {"kind": kind}) or 0.0


async def receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def sink(message: dict[str, Any]) -> None:
    pass


async def gone(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.body":
        raise OSError("the client went away")


def route(*messages: dict[str, Any], fail: bool = False) -> Callable[..., Awaitable[None]]:
    """An ASGI app that sends ``messages`` and records the gauges while it still runs."""
    seen: dict[str, float] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        seen.update(sse=live("sse"), websocket=live("websocket"))
        if fail:
            raise RuntimeError("the route failed")

    app.seen = seen  # type: ignore[attr-defined]
    return app


async def test_an_sse_answer_counts_while_it_streams_and_not_after():
    before = live("sse")
    app = route(
        SSE_START, {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}
    )
    await LiveClients(app)({"type": "http"}, receive, sink)
    assert app.seen["sse"] == before + 1  # type: ignore[attr-defined]
    assert live("sse") == before


async def test_a_websocket_counts_from_its_accept_until_it_ends():
    before = live("websocket")
    app = route({"type": "websocket.accept"}, {"type": "websocket.send", "text": "{}"})
    await LiveClients(app)({"type": "websocket"}, receive, sink)
    assert app.seen["websocket"] == before + 1  # type: ignore[attr-defined]
    assert live("websocket") == before


async def test_a_failing_route_or_a_gone_client_gives_its_count_back():
    before = live("sse"), live("websocket")
    failing = route(SSE_START, fail=True)
    with pytest.raises(RuntimeError):
        await LiveClients(failing)({"type": "http"}, receive, sink)
    with pytest.raises(OSError):
        await LiveClients(route(SSE_START, {"type": "http.response.body", "body": b"x"}))(
            {"type": "http"}, receive, gone
        )
    with pytest.raises(RuntimeError):
        await LiveClients(route({"type": "websocket.accept"}, fail=True))(
            {"type": "websocket"}, receive, sink
        )
    assert (live("sse"), live("websocket")) == before


async def test_a_plain_answer_and_a_refused_websocket_never_count():
    before = live("sse"), live("websocket")
    plain = route(JSON_START, {"type": "http.response.body", "body": b"{}"})
    refused = route({"type": "websocket.close", "code": 4401})
    await LiveClients(plain)({"type": "http"}, receive, sink)
    await LiveClients(refused)({"type": "websocket"}, receive, sink)
    assert plain.seen == {"sse": before[0], "websocket": before[1]}  # type: ignore[attr-defined]
    assert refused.seen == plain.seen  # type: ignore[attr-defined]


def test_both_kinds_exist_at_zero_before_any_client():
    assert REGISTRY.get_sample_value("studio_live_clients", {"kind": "sse"}) is not None
    assert REGISTRY.get_sample_value("studio_live_clients", {"kind": "websocket"}) is not None

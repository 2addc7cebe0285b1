"""The span of each HTTP request: ``HTTP <METHOD> <route template>`` (kind SERVER), child of the
caller's ``traceparent`` when it sends one, so that the commands, events and projections it
causes are one trace with it (``services.kernel.tracing``).

The outermost layer of the gateway: every other layer (the request id, the access log, a 500's
traceback) logs inside the span. The route template is known once the router has matched, so
the span is renamed after the answer; an unmatched path is ``HTTP <METHOD>`` alone (a path is
unbounded). Probes (``/health``, ``/metrics``) make no span. A 5xx marks the span failed; an
exception that escapes is recorded on it. Tracing off, the caller's context is only carried on.

Imports ``services.kernel.tracing`` and the pages' ``route_path``.
"""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.trace import Span, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.pages.fragments import route_path
from services.kernel import tracing

#: Paths polled by probes and scrapers: a span each would drown the traces that matter.
UNTRACED = frozenset({"/health", "/metrics"})


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        caller = _incoming(scope)
        kind = tracing.SpanKind.SERVER
        with tracing.span(f"HTTP {method}", kind=kind, context=caller) as span:
            if not span.is_recording():
                await self.app(scope, receive, send)
                return
            await _traced(self.app, scope, receive, send, span)


async def _traced(app: ASGIApp, scope: Scope, receive: Receive, send: Send, span: Span) -> None:
    status = 0

    async def record(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    span.set_attribute("http.request.method", scope["method"])
    span.set_attribute("url.path", scope["path"])
    try:
        await app(scope, receive, record)
    finally:
        route = route_path(scope)
        if route:
            span.update_name(f"HTTP {scope['method']} {route}")
            span.set_attribute("http.route", route)
        if status:
            span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(StatusCode.ERROR, f"answered {status}")
            span.set_attribute("error.type", str(status))


def _incoming(scope: Scope) -> tracing.Context | None:
    """The caller's trace context (its ``traceparent``/``tracestate`` headers), if it sent one."""
    carrier = {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in scope["headers"]
        if key in (b"traceparent", b"tracestate")
    }
    return tracing.extract(carrier) if carrier else None


def install(app: FastAPI) -> None:
    """Add the span layer; call it last, so that it is the outermost."""
    app.add_middleware(TracingMiddleware)

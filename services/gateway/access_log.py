"""The access log and the HTTP metrics: one line per HTTP request, at INFO on the
``studio.access`` logger, and ``studio_http_requests_total``/``studio_http_request_seconds``.

Each line says ``GET /api/v1/projects/p1 200 3.1 ms`` and carries, as fields of its JSON line,
``method``, ``route`` (the route template: ``/api/v1/projects/{project_id}``), ``path`` (without its
query string, which may hold a token), ``status``, ``duration_ms`` and ``client``; the request
id comes with every line of the request (``services.kernel.logs``). It sits inside the request-id
layer so that the id is known, and logs a request that failed with an exception as the 500 that
layer answers (the traceback is that layer's to log, once). uvicorn's own access log stays off.

Imports starlette, prometheus-client and the gateway's route naming only.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.pages.fragments import route_path

log = logging.getLogger("studio.access")

HTTP_REQUESTS = Counter(
    "studio_http_requests_total", "HTTP requests.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram("studio_http_request_seconds", "HTTP request time.", ["method", "route"])


class AccessLog:
    """Each HTTP request, once it is answered: its access line and its metrics (by the whole
    route template, ``/api/v1/projects/{project_id}``: low cardinality, unambiguous between
    routers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            seconds = time.perf_counter() - started
            route = route_path(scope) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], route).observe(seconds)
            _line(scope, route, status, seconds)


def _line(scope: Scope, route: str, status: int, seconds: float) -> None:
    method, path = scope["method"], scope["path"]
    client = scope.get("client")
    ms = round(seconds * 1000, 1)
    fields = {
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": ms,
        "client": client[0] if client else "",
    }
    log.info("%s %s %d %.1f ms", method, path, status, ms, extra=fields)

"""One route, two audiences: an API route answers JSON to a script and an HTML fragment to htmx.

When a request carries ``HX-Request: true`` and its route has a fragment template registered, the
JSON the route produced — the same envelope a script gets — is drawn by that template instead, so
a page can never show something the API would not say. An error answer to htmx becomes the error
fragment: the message in the page's message area and each field's problem next to its field
(out-of-band swaps), with ``HX-Reswap: none`` so the page's content stays as it was. Anything else
(JSON without a template, files, event streams) passes through untouched.

Templates are registered by method and route template, without the version: ``("GET",
"/api/projects")`` serves ``/api/projects`` and ``/api/v1/projects`` alike. Imports starlette and
the templating module only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.pages.templating import render_text

log = logging.getLogger(__name__)

ERROR_TEMPLATE: Final = "fragments/error.html"
#: Answers bigger than this are never buffered for a fragment (a route answering that much JSON
#: to a page has no business doing so): they pass through as JSON.
MAX_BUFFERED: Final = 8 * 1024 * 1024


def route_key(method: str, path: str) -> tuple[str, str]:
    """``("GET", "/api/v1/projects/{project_id}")`` → ``("GET", "/api/projects/{project_id}")``."""
    if path.startswith("/api/v1/") or path == "/api/v1":
        path = "/api" + path.removeprefix("/api/v1")
    return method.upper(), path


def route_path(scope: Scope) -> str | None:
    """The matched route's whole path template (``/api/v1/splits/{split_id}``). FastAPI keeps a
    route of an included router under its router's own path (``/splits/{split_id}``) and the
    whole one, prefixes included, in the request's effective route context."""
    context = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return str(path) if path else None


def wants_fragment(scope: Scope) -> bool:
    if scope["type"] != "http" or not scope["path"].startswith("/api"):
        return False
    headers = dict(scope["headers"])
    return headers.get(b"hx-request", b"").lower() == b"true"


class FragmentMiddleware:
    """Sits inside the request-id layer and outside the routes (see the module's doc)."""

    def __init__(self, app: ASGIApp, templates: Mapping[tuple[str, str], str]) -> None:
        self.app = app
        self.templates = {route_key(m, p): t for (m, p), t in templates.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not wants_fragment(scope):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        passing = False

        async def capture(message: Message) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                if not self._convertible(scope, message):
                    passing = True
                    await send(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if sum(map(len, chunks)) > MAX_BUFFERED:
                passing = True
                assert start is not None
                await send(start)
                body = b"".join(chunks)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                chunks.clear()
                return
            if not message.get("more_body", False):
                assert start is not None
                await self._answer(scope, start, b"".join(chunks), send)

        await self.app(scope, receive, capture)

    def _template(self, scope: Scope, status: int) -> str | None:
        if status >= 400:
            return ERROR_TEMPLATE
        path = route_path(scope)
        return self.templates.get(route_key(scope["method"], path)) if path else None

    def _convertible(self, scope: Scope, start: Message) -> bool:
        headers = dict(start.get("headers", []))
        kind = headers.get(b"content-type", b"").split(b";")[0].strip()
        return kind == b"application/json" and self._template(scope, start["status"]) is not None

    async def _answer(self, scope: Scope, start: Message, body: bytes, send: Send) -> None:
        status = start["status"]
        template = self._template(scope, status)
        assert template is not None
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        request = Request(scope)
        values = _values(payload, status)
        html = render_text(request, template, **values).encode()
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        headers += [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(html)).encode()),
            (b"vary", b"HX-Request"),
        ]
        if status >= 400:
            headers.append((b"hx-reswap", b"none"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": html})


def _values(payload: Any, status: int) -> dict[str, Any]:
    """What a fragment template gets: ``data`` (the envelope's), ``error`` for an error, and
    the whole ``payload`` for answers shaped otherwise (the token answer)."""
    if not isinstance(payload, dict):
        return {"data": payload, "payload": payload, "error": None, "status": status}
    error = payload.get("error") if status >= 400 else None
    if status >= 400 and not isinstance(error, dict):
        error = {"code": "HTTP_ERROR", "message": f"the request failed ({status})"}
    return {
        "data": payload.get("data"),
        "payload": payload,
        "error": error,
        "request_id": payload.get("request_id"),
        "status": status,
    }

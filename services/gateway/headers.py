"""What every answer carries and what every request may weigh: security headers, CORS, and the
body-size cap.

- Security headers on every HTTP answer, errors included: a Content Security Policy without
  inline scripts (the API docs, served only in development, get the CDN and inline script that
  Swagger UI and ReDoc need, on their own pages only), ``nosniff``, no referrer, no framing, and
  HSTS when a TLS-terminating proxy is in front.
- CORS is off unless ``STUDIO_CORS_ORIGINS`` names origins: then those, and only those, may call
  the API from a browser (tokens travel in headers, so no cookies are allowed).
- A request body is capped at ``STUDIO_MAX_BODY_BYTES`` (an upload route at
  ``STUDIO_UPLOAD_MAX_BYTES``): a declared ``Content-Length`` over the cap is answered 413 before
  a byte is read, and a chunked body is counted as it streams and cut off at the cap.

Imports starlette and the gateway's envelope; no route, no read model.
"""

from __future__ import annotations

import re
from typing import Final

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import envelope
from services.kernel.settings import Settings

#: No inline script or style, nothing from elsewhere, never in a frame.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: Swagger UI and ReDoc as FastAPI serves them: their bundles from jsDelivr, an inline
#: bootstrap script, and (ReDoc) fonts and a web worker. Only on the docs pages.
DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS: Final = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
HSTS: Final = "max-age=31536000; includeSubDomains"
#: Routes whose body is a file: they are capped at ``upload_max_bytes`` (plus the multipart
#: framing and small fields around the file: the upload itself counts the file's bytes exactly).
UPLOAD_OVERHEAD: Final = 64 * 1024
IMPORT_UPLOAD: Final = re.compile(r"^/api(/v1)?/datasets/import/upload/?$")
UPLOAD_ROUTES: Final = (IMPORT_UPLOAD, re.compile(r"^/api(/v1)?/export/[^/]+/predict/?$"))
#: Headers a browser may send cross-origin and read back, when CORS is on.
CORS_REQUEST_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "X-API-Key",
    "X-Request-ID",
    "Idempotency-Key",
    "If-Match",
    "Last-Event-ID",
)
CORS_EXPOSED_HEADERS: Final = (
    "X-Request-ID",
    "Retry-After",
    "ETag",
    "Location",
    "RateLimit-Policy",
)


def security_headers(settings: Settings) -> dict[bytes, bytes]:
    """The headers every answer carries (the CSP is chosen per path)."""
    headers = {
        b"x-content-type-options": b"nosniff",
        b"referrer-policy": b"no-referrer",
        b"x-frame-options": b"DENY",
        b"cross-origin-opener-policy": b"same-origin",
        b"permissions-policy": b"camera=(), microphone=(), geolocation=(), payment=()",
    }
    if not settings.cors_origins:  # else the allowed origins' pages may show its images
        headers[b"cross-origin-resource-policy"] = b"same-origin"
    if settings.tls_terminated:
        headers[b"strict-transport-security"] = HSTS.encode()
    return headers


class SecurityHeaders:
    """Adds the security headers to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.headers = security_headers(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = (DOCS_CSP if scope["path"] in DOCS_PATHS else CSP).encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in (*self.headers.items(), (b"content-security-policy", csp)):
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def body_cap(path: str, settings: Settings) -> int:
    """The most bytes a request to ``path`` may send."""
    if any(route.match(path) for route in UPLOAD_ROUTES):
        return settings.upload_max_bytes + UPLOAD_OVERHEAD
    return settings.max_body_bytes


def too_large(cap: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than {cap} bytes")


class BodyLimit:
    """Refuses a request body over its cap with 413: at once for a declared length, as soon as
    the count passes the cap for a chunked one (the route reading it gets the 413 raised)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = body_cap(scope["path"], self.settings)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            # An archive keeps the code its route has always answered (the upload counts it too).
            archive = IMPORT_UPLOAD.match(scope["path"])
            code = "ARCHIVE_TOO_LARGE" if archive else "PAYLOAD_TOO_LARGE"
            answer = envelope.error(413, code, str(too_large(cap).detail))
            await answer(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise too_large(cap)
            return message

        await self.app(scope, counted, send)


def install(app: FastAPI, settings: Settings) -> None:
    """The body cap and CORS inside the request-id layer, so that their refusals carry it. Call
    it before ``envelope.install``; ``install_outer`` after."""
    app.add_middleware(BodyLimit, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=600,
        )


def install_outer(app: FastAPI, settings: Settings) -> None:
    """The security headers outside everything, so that even a last-resort 500 carries them."""
    app.add_middleware(SecurityHeaders, settings=settings)

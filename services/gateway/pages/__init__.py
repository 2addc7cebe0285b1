"""The studio's pages: Jinja2 documents served by the gateway, made live with htmx and the API's
own routes (``fragments.py``), styled and scripted only from ``static/`` (vendored libraries with
their licences in ``static/vendor``; nothing comes from elsewhere). The app adds
``fragments.FragmentMiddleware`` with ``fragment_templates()`` among its middleware.

``install`` adds everything to the app: the static files, the page routes of every module in
``PAGES`` and HTML answers for errors on page paths (the
API keeps its JSON envelope). Each page module holds ``router`` and ``FRAGMENTS`` (``(method,
API route) → template``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final, cast
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway import envelope
from services.gateway.envelope import ApiError
from services.gateway.pages import (
    dataset,
    dataset_browse,
    evaluation,
    experiments,
    export,
    home,
    projects,
    session,
    split,
    system_page,
    training,
)
from services.gateway.pages.templating import STATIC, render

#: Every module of pages, in the order of the navigation.
PAGES: Final[tuple[ModuleType, ...]] = (
    session,
    home,
    projects,
    dataset,
    dataset_browse,
    split,
    training,
    experiments,
    evaluation,
    export,
    system_page,
)


def fragment_templates(pages: tuple[ModuleType, ...] = PAGES) -> Mapping[tuple[str, str], str]:
    templates: dict[tuple[str, str], str] = {}
    for module in pages:
        templates.update(getattr(module, "FRAGMENTS", {}))
    return templates


def is_page(request: Request) -> bool:
    """A request for a page (not the API, a probe or a static file)."""
    path = request.url.path
    return not path.startswith(("/api", "/static", "/health", "/metrics", "/ws"))


def install(app: FastAPI) -> None:
    """Serve the pages (call after ``envelope.install``: page errors become HTML here)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in PAGES:
        app.include_router(module.router)
    _page_errors(app)


def _page_errors(app: FastAPI) -> None:
    json_api_error = app.exception_handlers[ApiError]
    json_http_error = app.exception_handlers[StarletteHTTPException]
    json_invalid = app.exception_handlers[RequestValidationError]

    @app.exception_handler(session.SignInRequired)
    async def _sign_in(request: Request, exc: session.SignInRequired) -> Response:
        if request.headers.get("hx-request", "").lower() == "true":
            # A part of a page reloading itself: the whole page goes to sign in, and back to
            # where the person was (never the sign-in form drawn inside the part).
            shown = request.headers.get("hx-current-url", "")
            back = urlsplit(shown)
            where = back.path + (f"?{back.query}" if back.query else "") if shown else "/"
            login = session.login_url(where)
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(session.login_url(exc.next_path), status_code=303)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if not is_page(request):
            return await _json(json_api_error, request, exc)
        return error_page(request, exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # An unknown address is a page only to a browser (it asks for HTML); a script asking
        # for one gets the envelope, as from the API.
        if not is_page(request) or "text/html" not in request.headers.get("accept", ""):
            return await _json(json_http_error, request, exc)
        code = "NOT_FOUND" if exc.status_code == 404 else "HTTP_ERROR"
        return error_page(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not is_page(request):
            return await _json(json_invalid, request, exc)
        return error_page(request, 404, "NOT_FOUND", "There is no such page.")


async def _json(handler: Any, request: Request, exc: Exception) -> Response:
    """The API's own answer to an error (the JSON envelope)."""
    answer = handler(request, exc)
    return cast(Response, await answer if inspect.isawaitable(answer) else answer)


def error_page(request: Request, status: int, code: str, message: str) -> Response:
    """A page that failed, as a page: what happened, the request id, and a way on."""
    return render(
        request,
        "error.html",
        status=status,
        status_code=status,
        code=code,
        message=message,
        request_id=envelope.REQUEST_ID.get(),
    )

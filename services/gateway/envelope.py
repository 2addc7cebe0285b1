"""The JSON envelope every response uses, the request id, and errors as HTTP answers."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts import common
from services.kernel.logs import REQUEST_ID
from services.kernel.transient import TRANSIENT

log = logging.getLogger(__name__)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Seconds a client is told to wait (``Retry-After``) before retrying a 503 of a NATS outage.
UNAVAILABLE_RETRY_S = 1

STATUS_OF = {
    common.VALIDATION_ERROR: 422,
    common.NOT_FOUND: 404,
    common.CONFLICT: 409,
    common.UNAVAILABLE: 503,
    common.INTERNAL: 500,
}
_CODE_OF = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: common.NOT_FOUND,
    405: "METHOD_NOT_ALLOWED",
    409: common.CONFLICT,
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: common.VALIDATION_ERROR,
    503: common.UNAVAILABLE,
}


class Problem(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    #: The input at fault (``project_id``, ``hyperparameters.pretrained``, ``If-Match`` ...).
    field: str | None = None
    #: Every problem found, for a validation error.
    details: list[Problem] | None = None


class ErrorEnvelope(BaseModel):
    """Every error answer, whatever its status."""

    status: Literal["error"]
    error: ErrorInfo
    #: As in the ``X-Request-ID`` header; the logs name it too.
    request_id: str


#: For a router's ``responses=``: what its error answers look like, documented for clients.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "Refused: the envelope says why."},
    "5XX": {"model": ErrorEnvelope, "description": "Unavailable, or a bug: see request_id."},
}


class ApiError(Exception):
    """An error answered as the envelope; ``code`` is one of the contract's error codes."""

    def __init__(self, code: str, message: str, *, field: str | None = None, status: int = 0):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field
        self.status = status or STATUS_OF.get(code, 400)


T = TypeVar("T")


def found(row: T | None, what: str) -> T:
    """``row``, or a 404 saying ``what`` (e.g. "run 0f3c…") does not exist."""
    if row is None:
        raise ApiError(common.NOT_FOUND, f"{what} does not exist")
    return row


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "ok", "data": data}, status_code=status, headers=headers)


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    err.update(extra)
    return {"status": "error", "error": err, "request_id": REQUEST_ID.get()}


def error(
    status: int, code: str, message: str, field: str | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field, **extra), status_code=status)


class RequestIdMiddleware:
    """The outermost layer: takes ``X-Request-ID`` (or makes one), keeps it for the request and
    echoes it on every answer. It also answers an exception no handler took (a bug) as the 500
    envelope and logs its traceback with the request id: Starlette's own last-resort handler
    runs outside every middleware, where the id is already gone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unexpected error in %s %s, request id %s",
                scope.get("method"),
                scope.get("path"),
                request_id,
                extra={"request_id": request_id},
            )
            if started:  # the answer is under way: only closing the connection is left
                raise
            message = f"internal error; look for request id {request_id} in the logs"
            answer = error(500, common.INTERNAL, message)
            await answer(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def _malformed_path_id(errors: Sequence[Any]) -> str | None:
    """A path id that breaks the id rule names nothing that exists: a 404, not a 422."""
    for e in errors:
        loc = tuple(e.get("loc", ()))
        if len(loc) == 2 and loc[0] == "path":
            noun = str(loc[1]).removesuffix("_id").replace("_", " ")
            shown = str(e.get("input", ""))
            shown = shown if len(shown) <= 80 else shown[:80] + "…"
            return f"{noun} {shown!r} does not exist"
    return None


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[-1] if loc else "")


def install(app: FastAPI) -> None:
    """Every error, expected or not, leaves as the envelope with the request id. Call it after
    adding every other middleware: the request id must be the outermost layer."""
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        if missing := _malformed_path_id(exc.errors()):
            return error(404, common.NOT_FOUND, missing)
        problems = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return error(422, common.VALIDATION_ERROR, message, first["field"], details=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_OF.get(exc.status_code, "HTTP_ERROR")
        response = error(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def _nats_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # NATS restarting, or unreachable for longer than a call waits: try again shortly.
        answer = error(503, common.UNAVAILABLE, f"NATS is unavailable ({type(exc).__name__})")
        answer.headers["Retry-After"] = str(UNAVAILABLE_RETRY_S)
        return answer

    for transient in TRANSIENT:  # a NATS outage is a 503, never a 500
        app.add_exception_handler(transient, _nats_unavailable)

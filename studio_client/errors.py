"""Typed errors of the studio client: every refusal of the gateway, raised with the envelope's
``code``, ``message``, ``field`` and ``request_id`` and the HTTP status.

The gateway answers every error as ``{"status": "error", "error": {"code", "message",
"field"?, "details"?}, "request_id"}``; ``from_response`` turns such an answer (or anything
else a proxy may have answered) into the most specific class below. Imports nothing but the
standard library.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChecksumMismatch",
    "Conflict",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "StreamEnded",
    "StudioError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "error_from",
]


class StudioError(Exception):
    """A refusal of the studio (or no answer from it), as the envelope says it."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        request_id: str | None = None,
        status: int = 0,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        self.status = status
        #: Every problem found, for a validation error: ``[{"field", "message"}, ...]``.
        self.details = details or []
        #: Seconds the gateway asked to wait (``Retry-After``), when it said.
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        status = f"{self.status} " if self.status else ""
        return f"{status}{self.code}{where}: {self.message}{rid}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"field={self.field!r}, request_id={self.request_id!r}, status={self.status})"
        )


class NotFound(StudioError):
    """404: the thing named does not exist, or the caller may not know it does."""


class Conflict(StudioError):
    """409: the state of the thing forbids it now (a version moved on, a job not done)."""


class Unauthorized(StudioError):
    """401: no credential, or one that is no longer valid (expired, signed out, revoked)."""


class Forbidden(StudioError):
    """403: signed in, but without the role this needs."""


class ValidationFailed(StudioError):
    """422 (or 400, 413, 415): the request itself is wrong; ``field`` names the input at fault."""


class Unavailable(StudioError):
    """503, or no connection: the studio (or a service behind it) cannot answer now."""


class RateLimited(StudioError):
    """429: too many requests; ``retry_after`` says how long to wait."""


class ChecksumMismatch(StudioError):
    """A download whose bytes do not hash to the sha256 the gateway announced."""


class StreamEnded(StudioError):
    """A live stream the gateway ended before its end: access was withdrawn (``closed``)."""


_BY_STATUS: dict[int, type[StudioError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: Conflict,
    413: ValidationFailed,
    415: ValidationFailed,
    422: ValidationFailed,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> StudioError:
    """The typed error of an answer with ``status`` and decoded JSON ``body`` (or ``None``
    when the body was not JSON: a proxy's page, an empty answer)."""
    kind = _BY_STATUS.get(status, StudioError)
    info = body.get("error") if isinstance(body, dict) else None
    if isinstance(info, dict):
        rid = body.get("request_id") if isinstance(body.get("request_id"), str) else None
        return kind(
            str(info.get("code") or f"HTTP_{status}"),
            str(info.get("message") or ""),
            field=info.get("field") if isinstance(info.get("field"), str) else None,
            request_id=rid or request_id,
            status=status,
            details=info.get("details") if isinstance(info.get("details"), list) else None,
            retry_after=retry_after,
        )
    message = f"the server answered {status} without the studio's error envelope"
    return kind(
        f"HTTP_{status}",
        message,
        request_id=request_id,
        status=status,
        retry_after=retry_after,
    )

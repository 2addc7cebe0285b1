"""Log lines of every studio process: one JSON object per line for machines, plain lines for people.

A JSON line carries ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``service``, ``logger``,
``message``; ``request_id`` when the line belongs to a request (the gateway's ``X-Request-ID``,
which travels to the services in the ``Studio-Request-Id`` NATS header); ``trace_id`` and
``span_id`` (W3C hex) when a span is current; ``exc_info`` (the traceback as text) when there is
one; and any ``extra=`` fields the call gave (the access log's ``method``, ``route``, ``status``).

JSON when stderr is not a terminal (a file, a pipe, a container's log driver) or
``STUDIO_LOG_FORMAT=json``; plain lines when it is a terminal or ``STUDIO_LOG_FORMAT=text``.

Imports the standard library and the OpenTelemetry API only.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

from opentelemetry import trace

#: The request a line belongs to: set by the gateway for each HTTP request, and by the services'
#: command and query endpoints from the ``Studio-Request-Id`` header.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
#: The NATS header that carries the request id from the gateway to the services.
REQUEST_ID_HEADER: Final = "Studio-Request-Id"

LogFormat = Literal["auto", "json", "text"]

#: A ``LogRecord``'s own attributes: everything else on a record came from ``extra=``.
_RECORD_FIELDS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "trace_id",
    "span_id",
    "taskName",
    "color_message",  # uvicorn's message with terminal colours
}
#: Marks the handler ``setup_logging`` installed, so that a second call replaces it.
_OURS: Final = "_studio_handler"


@contextmanager
def request_scope(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Lines logged inside belong to the request named by ``headers``' ``Studio-Request-Id``."""
    token = REQUEST_ID.set((headers or {}).get(REQUEST_ID_HEADER, ""))
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class ContextFilter(logging.Filter):
    """Stamps each record, as it is emitted (in the caller's context), with the request id and
    the current span's ids. An explicit ``extra={"request_id": ...}`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = REQUEST_ID.get()
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call added with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's doc)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "trace_id", "span_id"):
            if value := getattr(record, key, ""):
                line[key] = value
        line.update((k, v) for k, v in extras(record).items() if k not in line)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``03:41:07.123 gateway INFO  studio.access: GET /health 200 1.2 ms [req 1f3c… trace 4bf9…]``
    and the traceback below it, for a person at a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        text = (
            f"{moment} {self.service:>9} {record.levelname:<5} {record.name}: {record.getMessage()}"
        )
        ids = [
            f"{label} {value}"
            for label, key in (("req", "request_id"), ("trace", "trace_id"))
            if (value := getattr(record, key, ""))
        ]
        if ids:
            text += f"  [{', '.join(ids)}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def wants_json(log_format: str, stream: IO[str]) -> bool:
    """JSON unless asked for text, or asked for nothing while writing to a terminal."""
    if log_format in ("json", "text"):
        return log_format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def setup_logging(
    service: str,
    level: str = "info",
    log_format: str = "auto",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every logger's lines of ``level`` and above to ``stream`` (stderr) as ``log_format``
    says (``settings.log_format``, ``STUDIO_LOG_FORMAT``). Calling it again replaces what an
    earlier call installed; handlers others added (a test's capture) are left alone."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    formatter = JsonFormatter(service) if wants_json(log_format, out) else TextFormatter(service)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # A library's warning is a log line too, in the same format, not bare text on stderr.
    logging.captureWarnings(True)
    # nats-py logs every reconnect attempt at ERROR; the studio reports NATS state itself.
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    return handler

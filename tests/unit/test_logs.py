"""The studio's log lines (services/kernel/logs.py): JSON for machines, text for people, each
line naming its request and its trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.kernel.logs import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    request_scope,
    setup_logging,
    wants_json,
)
from services.kernel.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What ``setup_logging`` writes (JSON forced), the root logger restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    out = io.StringIO()
    setup_logging("projects", "debug", "json", stream=out)
    yield out
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_fixed_fields(logs: io.StringIO) -> None:
    # when a line is logged outside any request or span
    logging.getLogger("studio.test").info("hello %s", "world")
    # then it is one JSON object with time, level, service, logger and message only
    (line,) = lines(logs)
    assert set(line) == {"time", "level", "service", "logger", "message"}
    assert line["level"] == "INFO" and line["service"] == "projects"
    assert line["logger"] == "studio.test" and line["message"] == "hello world"
    # and its time is ISO 8601 in UTC, to the millisecond
    assert line["time"].endswith("Z") and len(line["time"].split(".")[1]) == 4
    assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).utcoffset().seconds == 0


def test_a_line_names_the_request_it_belongs_to(logs: io.StringIO) -> None:
    # given a request's id set as the gateway sets it, then as a service's endpoint does
    token = REQUEST_ID.set("req-gateway")
    try:
        logging.getLogger("studio.test").info("in the gateway")
    finally:
        REQUEST_ID.reset(token)
    with request_scope({REQUEST_ID_HEADER: "req-service"}):
        logging.getLogger("studio.test").info("in a service")
    logging.getLogger("studio.test").info("after")
    # then each line inside carries it, and none after
    ids = [line.get("request_id") for line in lines(logs)]
    assert ids == ["req-gateway", "req-service", None]


def test_an_explicit_request_id_and_extra_fields_are_kept(logs: io.StringIO) -> None:
    logging.getLogger("studio.test").info(
        "GET /", extra={"request_id": "given", "status": 200, "message_id": "m1"}
    )
    (line,) = lines(logs)
    assert line["request_id"] == "given"
    assert line["status"] == 200 and line["message_id"] == "m1"


def test_a_line_inside_a_span_names_its_trace_and_span(logs: io.StringIO) -> None:
    # given a real SDK tracer (the API alone makes no valid spans)
    tracer = TracerProvider().get_tracer("test")
    # when a line is logged inside a span
    with tracer.start_as_current_span("handle CreateProject") as span:
        logging.getLogger("studio.test").info("inside")
        context = span.get_span_context()
    logging.getLogger("studio.test").info("outside")
    inside, outside = lines(logs)
    # then it carries the span's W3C ids in hex, and a line outside carries none
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert len(inside["trace_id"]) == 32 and len(inside["span_id"]) == 16
    assert "trace_id" not in outside and "span_id" not in outside


def test_an_exception_is_logged_as_its_traceback_in_the_same_line(logs: io.StringIO) -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        logging.getLogger("studio.test").exception("it failed")
    (line,) = logs.getvalue().splitlines()  # one line, however long the traceback
    parsed = json.loads(line)
    assert parsed["level"] == "ERROR" and parsed["message"] == "it failed"
    assert parsed["exc_info"].startswith("Traceback (most recent call last):")
    assert parsed["exc_info"].endswith("RuntimeError: a bug")


def test_a_terminal_gets_text_and_anything_else_json() -> None:
    assert wants_json("auto", io.StringIO())
    assert not wants_json("auto", Terminal())
    assert wants_json("json", Terminal())
    assert not wants_json("text", io.StringIO())


def test_text_lines_are_for_people(logs: io.StringIO) -> None:
    # given logging set up on a terminal
    out = Terminal()
    setup_logging("gateway", "info", "auto", stream=out)
    # when lines are logged, one with a request id and a traceback
    with request_scope({REQUEST_ID_HEADER: "req-7"}):
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("studio.test").exception("it failed")
    logging.getLogger("studio.test").debug("below the level")
    # then they are plain text with the service, level, logger and request id
    text = out.getvalue()
    first = text.splitlines()[0]
    assert "gateway ERROR studio.test: it failed  [req req-7]" in first
    assert "Traceback (most recent call last):" in text and "ValueError: bad" in text
    assert not text.lstrip().startswith("{") and "below the level" not in text
    # and the earlier JSON handler was replaced, not doubled
    assert logs.getvalue() == ""


def test_nats_client_reconnect_noise_stays_quiet(logs: io.StringIO) -> None:
    logging.getLogger("nats.aio.client").error("reconnecting")
    assert logs.getvalue() == ""


def test_the_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().log_format == "auto"
    monkeypatch.setenv("STUDIO_LOG_FORMAT", " JSON ")
    assert Settings().log_format == "json"
    monkeypatch.setenv("STUDIO_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()

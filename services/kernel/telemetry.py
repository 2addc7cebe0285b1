"""Telemetry: Prometheus metrics every service exposes, and W3C trace context over NATS."""

from __future__ import annotations

import logging
import re
import secrets

from prometheus_client import Counter, Histogram

COMMANDS = Counter(
    "studio_commands_total", "Commands handled, by outcome.", ["service", "command", "outcome"]
)
COMMAND_SECONDS = Histogram(
    "studio_command_seconds", "Time to decide and store a command.", ["service", "command"]
)
EVENTS_APPENDED = Counter("studio_events_appended_total", "Events stored.", ["stream"])
PROJECTION_EVENTS = Counter(
    "studio_projection_events_total", "Events applied to read models.", ["projector"]
)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def child_traceparent(parent: str | None) -> str:
    """A W3C ``traceparent`` for a new span: in ``parent``'s trace if valid, else a new trace."""
    match = _TRACEPARENT.match(parent or "")
    if match and match.group(1) != "0" * 32:
        return f"00-{match.group(1)}-{secrets.token_hex(8)}-{match.group(3)}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def setup_logging(service: str, level: str = "info") -> None:
    """Log lines of ``service`` at ``level`` (``settings.log_level``, ``STUDIO_LOG_LEVEL``)."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {service:>9} %(levelname)-5s %(name)s: %(message)s",
    )
    # nats-py logs every reconnect attempt at ERROR; the studio reports NATS state itself.
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)

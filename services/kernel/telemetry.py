"""Telemetry: the Prometheus metrics of the kernel, which every service exposes, and W3C trace
context over NATS.

Every name here is one the Grafana dashboard queries (``deploy/grafana/dashboards``): rename
none. Label values are bounded (services, command types, streams, projectors, two client
kinds); a labelled series a dashboard reads is created at 0 before its first event
(``prime_*``), so that a rate over it is 0 rather than no data. Domain figures live in each
service's own ``metrics.py``. Imports ``prometheus_client`` and the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter(
    "studio_commands_total", "Commands handled, by outcome.", ["service", "command", "outcome"]
)
COMMAND_SECONDS = Histogram(
    "studio_command_seconds", "Time to decide and store a command.", ["service", "command"]
)
EVENTS_APPENDED = Counter(
    "studio_events_appended_total", "Events stored in the event store, by stream.", ["stream"]
)
#: The labels of every projector's figures: the service running it, its name, its stream.
PROJECTOR_LABELS: Final = ["service", "projector", "stream"]
EVENTS_CONSUMED = Counter(
    "studio_events_consumed_total",
    "Events a projector applied to its read model (a redelivered one is not counted again).",
    PROJECTOR_LABELS,
)
PROJECTION_POSITION = Gauge(
    "studio_projection_position",
    "The last stream sequence a projector applied to its read model.",
    PROJECTOR_LABELS,
)
CONSUMER_LAG = Gauge(
    "studio_consumer_lag_events",
    "Events stored on a projector's subjects that it has not applied yet.",
    PROJECTOR_LABELS,
)
#: The kinds of live client the gateway streams to.
LIVE_KINDS: Final = ("sse", "websocket")
LIVE_CLIENTS = Gauge(
    "studio_live_clients",
    "Clients connected to a live stream now: SSE streams and WebSockets.",
    ["kind"],
)
BUILD_INFO = Gauge(
    "studio_build_info",
    "Always 1: the service and the studio version it runs.",
    ["service", "version"],
)
for _kind in LIVE_KINDS:
    LIVE_CLIENTS.labels(_kind)


def studio_version() -> str:
    """The installed studio's version (``pyproject.toml``), or ``unknown`` from a bare tree."""
    try:
        return version("ai-studio")
    except PackageNotFoundError:
        return "unknown"


def build_info(service: str) -> None:
    """Publish ``studio_build_info{service,version} 1`` for this process."""
    BUILD_INFO.labels(service, studio_version()).set(1)


def prime_commands(service: str, commands: Iterable[str]) -> None:
    """Create each command's ``accepted`` series at 0, before its first command."""
    for name in commands:
        COMMANDS.labels(service, name, "accepted")
        COMMAND_SECONDS.labels(service, name)


def prime_stream(stream: str) -> None:
    """Create a stream's appended series at 0, before its first append."""
    EVENTS_APPENDED.labels(stream)

"""The runtime every service process shares: connect, wire, answer health, serve metrics, stop.

One composition root per service calls ``run(name, wire)``; ``wire`` registers the service's
subscribers on the connected broker and returns its projection runner, if it has one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from faststream.nats import NatsBroker
from prometheus_client import start_http_server

from contracts import common
from services.kernel.bus import (
    NatsUnavailable,
    command_endpoint,
    connect,
    service_broker,
    stop_broker,
)
from services.kernel.gpu import register_gpu_collector
from services.kernel.logs import setup_logging
from services.kernel.projection import ProjectionRunner
from services.kernel.settings import Settings
from services.kernel.telemetry import build_info, prime_commands
from services.kernel.tracing import setup_tracing

log = logging.getLogger(__name__)

#: How long a stopping service waits for its background work to clean up after itself.
BACKGROUND_STOP_S: Final = 5.0

#: The services that work on the GPU: their ``/metrics`` carry its figures, as the gateway's do
#: (a machine without a GPU gives none).
GPU_SERVICES: Final = frozenset({"trainer", "exporter"})


@dataclass(frozen=True)
class Parts:
    """What ``wire`` made: a projection runner to start, and work to do once it runs."""

    runner: ProjectionRunner | None = None
    on_start: Callable[[], Coroutine[Any, Any, None]] | None = None


Wire = Callable[[NatsBroker, Settings], Awaitable[Parts]]
#: A service's commands: each one's subject, type, and handler.
Commands = Iterable[tuple[str, type[Any], Callable[[Any, Mapping[str, str]], Awaitable[Any]]]]


def answer_commands(
    broker: NatsBroker, service: str, commands: Commands, *, max_workers: int = 8
) -> None:
    """Subscribes each command's handler (see ``command_endpoint``) on its subject, in the
    service's queue group, so that one instance answers each command."""
    commands = list(commands)
    prime_commands(service, [command_type.__name__ for _, command_type, _ in commands])
    for subject, command_type, handle in commands:
        endpoint = command_endpoint(service, command_type, handle)
        broker.subscriber(subject, queue=service, max_workers=max_workers)(endpoint)


def serve_metrics(service: str, settings: Settings) -> str | None:
    """Expose ``/metrics`` on the configured port (0: a free one); returns its URL."""
    if settings.metrics_port < 0:
        return None
    build_info(service)
    if service in GPU_SERVICES:
        register_gpu_collector()
    server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    return f"http://{settings.metrics_host}:{server.server_port}/metrics"


def answer_health(
    broker: NatsBroker, service: str, settings: Settings, metrics_url: str | None
) -> None:
    pong = msgspec.json.encode(
        common.Pong(
            service=service,
            instance=settings.instance,
            started_at=datetime.now(UTC).isoformat(),
            metrics_url=metrics_url,
        )
    )

    @broker.subscriber(common.health_subject(service))
    async def ping() -> bytes:
        return pong


def answer_rebuild(broker: NatsBroker, service: str, runner: ProjectionRunner) -> None:
    @broker.subscriber(common.rebuild_subject(service))
    async def rebuild() -> bytes:
        try:
            events, positions = await runner.rebuild()
        except Exception as exc:
            log.exception("rebuild failed")
            return msgspec.json.encode(
                common.CommandRejected(code=common.INTERNAL, message=f"rebuild failed: {exc}")
            )
        log.info("read model rebuilt from %d events", events)
        return msgspec.json.encode(
            common.ReadModelRebuilt(service=service, events=events, positions=positions)
        )


async def _serve(service: str, wire: Wire, settings: Settings) -> None:
    broker = service_broker(settings, service)
    await connect(broker, settings.nats_url, settings.connect_timeout)
    parts = await wire(broker, settings)
    runner = parts.runner
    answer_health(broker, service, settings, serve_metrics(service, settings))
    if runner is not None:
        answer_rebuild(broker, service, runner)
        await runner.start()
    await broker.start()
    background = asyncio.create_task(parts.on_start()) if parts.on_start else None
    log.info("%s is running (NATS %s)", service, settings.nats_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s is stopping", service)
    if background is not None:
        # Its own clean-up (a lease given back, a consumer stopped) runs before the connection
        # closes under it: cancelled and not awaited, it raced the close and lost.
        background.cancel()
        await asyncio.wait({background}, timeout=BACKGROUND_STOP_S)
    if runner is not None:
        await runner.stop()
    await stop_broker(broker)


def run(service: str, wire: Wire) -> None:
    """Run one service process until SIGINT or SIGTERM."""
    settings = Settings.from_env()
    setup_tracing(service, settings)
    setup_logging(service, settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(service, wire, settings))
    except NatsUnavailable as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    finally:
        # Stopped: the interpreter's last collection walks every object torch and its kin made
        # (6-10 s of a trainer's exit on a busy machine, past a 10 s SIGTERM grace); frozen,
        # they are left to the exit. Exit handlers (trace export, logs) still run.
        gc.freeze()

"""One studio for a whole fault module: its tests kill, pause or restart a service of it, and
the next test finds the studio whole again.

A studio start costs seconds of CPU (nats-server and a Python process per service); a module
whose tests each break one service need not pay it per test. ``module_studio`` starts one for
the module, ``whole_again`` (before each test) brings back what the last test broke: a paused
process resumed, a killed or stopped one started again, NATS started again on its port, then
waits until the studio is healthy. ``gateway_with`` gives a test the gateway settings it needs
(a wait for responders, a request timeout, an upload cap) by restarting the gateway alone, and
only when they differ from the running one's; a later restart of the gateway by the test keeps
them. Each test makes its own projects, so tests stay independent of their order.

Imports: tests.stack (the studio's processes), nats-py (a stream's last sequence).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats

from tests.stack import Stack

#: A service being started on a loaded machine (and the gateway replaying its read model).
HEALTHY_S = 90.0


@contextmanager
def module_studio(root: Path, services: tuple[str, ...], **env: str) -> Iterator[Stack]:
    """A studio of ``services`` with ``env``, started once for a module and stopped after it."""
    studio = Stack(root, services, **env)
    try:
        yield studio.up(HEALTHY_S)
    finally:
        studio.down()


def whole_again(studio: Stack) -> None:
    """Every process of the studio running and answering again, whatever the last test did."""
    if studio.nats is not None and studio.nats.process.poll() is not None:
        studio.start_nats(studio.nats.port)
    for name, proc in list(studio.procs.items()):
        proc.send_signal(signal.SIGCONT)  # a paused one (a test that failed before resuming)
        if proc.poll() is not None:
            del studio.procs[name]
    studio.up(HEALTHY_S)  # starts whatever is missing


def gateway_with(studio: Stack, env: dict[str, str]) -> None:
    """The studio's gateway running with ``env`` as the studio's extra settings: restarted with
    them when the running one has others."""
    if studio.extra_env == env and "gateway" in studio.procs:
        return
    if "gateway" in studio.procs:
        studio.stop("gateway")
    start_gateway(studio, env)


def start_gateway(studio: Stack, env: dict[str, str]) -> None:
    """Start the (stopped) gateway with ``env``, and wait until the studio is healthy. ``env``
    stays the studio's, so that a test restarting the gateway itself gets the same."""
    studio.extra_env = dict(env)
    studio.start("gateway")
    studio.wait_healthy(HEALTHY_S)


def last_sequence(studio: Stack, stream: str) -> int:
    """The sequence of the last event stored in ``stream``."""

    async def ask() -> int:
        nc = await nats.connect(studio.nats_url)
        try:
            info = await nc.jetstream().stream_info(stream)
            return int(info.state.last_seq)
        finally:
            await nc.close()

    return asyncio.run(ask())

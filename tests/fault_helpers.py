"""One studio for a whole fault module: its tests kill, pause or restart a service of it, and
the next test finds the studio whole again.

A studio start costs seconds of CPU (nats-server and a Python process per service); a module
whose tests each break one service need not pay it per test. ``module_studio`` starts one for
the module, ``whole_again`` (before each test) brings back what the last test broke: a paused
process resumed, a killed or stopped one started again, NATS started again on its port, then
waits until the studio is healthy. ``gateway_with`` gives a test the gateway settings it needs
(a wait for responders, a request timeout, an upload cap) by restarting the gateway alone, and
only when they differ from the running one's; they are the gateway's only (``FaultStudio``), so
a later restart of the gateway keeps them and a restarted service never gets them. Each test
makes its own projects, so tests stay independent of their order.

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


class FaultStudio(Stack):
    """A studio whose gateway, however it is started (by a test, or ``up``), gets the settings
    of ``gateway_env`` and the other services never do (the datasets service reads the upload
    cap too)."""

    gateway_env: dict[str, str]

    def start(self, name: str, module: str | None = None, **env: str) -> None:
        if name == "gateway":
            env = self.gateway_env | env
        super().start(name, module, **env)


@contextmanager
def module_studio(
    root: Path, services: tuple[str, ...], gateway: dict[str, str] | None = None, **env: str
) -> Iterator[Stack]:
    """A studio of ``services`` with ``env``, and ``gateway`` as its gateway's own settings,
    started once for a module and stopped after it."""
    studio = FaultStudio(root, services, **env)
    studio.gateway_env = dict(gateway or {})
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
    """The studio's gateway running with the settings ``env``: restarted with them when the
    running one has others."""
    assert isinstance(studio, FaultStudio), "a studio of module_studio's"
    if studio.gateway_env == env and "gateway" in studio.procs:
        return
    if "gateway" in studio.procs:
        studio.stop("gateway")
    start_gateway(studio, env)


def start_gateway(studio: Stack, env: dict[str, str]) -> None:
    """Start the (stopped) gateway with the settings ``env``, and wait until the studio is
    healthy. They stay the gateway's, so that a test restarting it itself gets the same."""
    assert isinstance(studio, FaultStudio), "a studio of module_studio's"
    studio.gateway_env = dict(env)
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

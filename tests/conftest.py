"""Fixtures shared by every test layer: a real nats-server on a random port with a temp store,
and the whole studio as child processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS

from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedNats
from tests.stack import SERVICES, Stack


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = nats_server.start(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_srv: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_srv.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One running studio shared by a module's tests (each test makes its own projects);
    a module's ``STACK_SERVICES`` names the services it needs, when not all."""
    s = Stack(tmp_path_factory.mktemp("stack"), services_of(request))
    try:
        yield s.up()
    finally:
        s.down()


@pytest.fixture
def own_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A studio of the test's own, for tests that stop, kill or restart parts of it."""
    s = Stack(tmp_path, services_of(request), STUDIO_REQUEST_TIMEOUT="1.5")
    try:
        yield s
    finally:
        s.down()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's studio, signed in as its first admin."""
    async with stack.client(timeout=15) as client:
        yield client


def services_of(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return tuple(getattr(request.module, "STACK_SERVICES", SERVICES))

"""Fixtures shared by every test layer: a real nats-server on a random port with a temp store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedNats


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

"""A keyed POST (``Idempotency-Key``) while NATS hangs: it answers within its request's time, as
an unkeyed one does, rather than after the key's own KV retries (a 5 s call tried twice, then
the command: a paused NATS answered 503 after 10 s). Against a real nats-server paused with
SIGSTOP; the route is ``api.idempotent.idempotent`` with a stand-in request and gateway."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.responses import JSONResponse, Response
from nats.aio.client import Client as NATS

from services.gateway import idempotency
from services.gateway.api.idempotent import idempotent
from services.gateway.idempotency import Idempotency, open_store
from services.kernel.nats_server import EmbeddedNats
from services.kernel.transient import TRANSIENT

pytestmark = pytest.mark.integration

#: The request's time in this test (``STUDIO_REQUEST_TIMEOUT``, 5 s by default).
REQUEST_TIMEOUT_S = 1.0
#: Far below what the key's calls took before (a KV call alone waits 5 s for its answer) and
#: far above the request's time: a loaded machine's slack, not a measurement.
WELL_WITHIN_S = 4.0


def keyed_post(key: str) -> Any:
    async def body() -> bytes:
        return b'{"name": "while hung"}'

    url = SimpleNamespace(path="/api/v1/projects", query="")
    return SimpleNamespace(headers={"idempotency-key": key}, method="POST", url=url, body=body)


async def test_a_keyed_post_gives_up_on_a_hung_nats_within_its_request_time(
    nats_srv: EmbeddedNats, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the claim it gave up on may be stored once NATS is back: a retry takes it over after
    # LEASE_S, shortened here)
    monkeypatch.setattr(idempotency, "LEASE_S", 0.5)
    # given a gateway with its idempotency keys, whose requests wait 1 s for NATS
    keys = Idempotency(await open_store(nc.jetstream()))
    settings = SimpleNamespace(request_timeout=REQUEST_TIMEOUT_S)
    gateway: Any = SimpleNamespace(settings=settings, idempotency=keys)
    ran: list[bool] = []

    async def run() -> Response:
        ran.append(True)
        return JSONResponse({"id": "p1"}, 201)

    # when NATS hangs (it neither answers nor closes the connection) under a keyed POST
    os.kill(nats_srv.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TRANSIENT):  # answered 503 UNAVAILABLE (envelope)
            await idempotent(keyed_post("k1"), gateway, "u1", run)
        waited = time.monotonic() - started
    finally:
        os.kill(nats_srv.process.pid, signal.SIGCONT)
    # then it gives up within its request's time, without running the command
    assert waited < WELL_WITHIN_S, waited
    assert not ran
    # and once NATS answers again, the same key runs the request once
    answer = await idempotent(keyed_post("k1"), gateway, "u1", run)
    assert answer.status_code == 201 and ran == [True]

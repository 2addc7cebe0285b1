"""A service's NATS connection leaves a node that stops answering (a frozen or cut-off machine,
which sends no RST) for another node of the cluster within a few PINGs, not nats-py's default
of three unanswered 2-minute PINGs: on a 3-node cluster with the gateway's node SIGSTOPped the
studio answered nothing for over 90 s before, and again after 11 s with 3 s PINGs."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from services.kernel import bus, nats_server

pytestmark = pytest.mark.integration


def test_a_frozen_node_is_left_within_ten_seconds():
    assert bus.PING_INTERVAL_S * (bus.MAX_OUTSTANDING_PINGS + 1) <= 10


async def test_a_connection_leaves_a_frozen_node_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # PINGs every second here, to keep the test short; the service's are every 3 s
    monkeypatch.setattr(bus, "PING_INTERVAL_S", 1)
    cluster = await asyncio.to_thread(nats_server.start_cluster, tmp_path, 3)
    broker = bus.make_broker(cluster.url, name="frozen-test")
    frozen = None
    try:
        await broker.connect()
        nc = broker.connection
        # given a service connected to one node of three
        port = nc.connected_url.port if nc.connected_url else None
        (frozen,) = [node for node in cluster.nodes if node.port == port]
        # when that node freezes (no RST, no FIN: its connections just go quiet)
        frozen.process.send_signal(signal.SIGSTOP)
        # then the connection moves to another node and a round trip goes through
        deadline = time.monotonic() + 30
        while not (nc.is_connected and nc.connected_url and nc.connected_url.port != port):
            assert time.monotonic() < deadline, "still on the frozen node"
            await asyncio.sleep(0.1)
        await nc.flush(timeout=10)
    finally:
        if frozen is not None:
            frozen.process.send_signal(signal.SIGCONT)
        await bus.stop_broker(broker)
        await asyncio.to_thread(cluster.stop)

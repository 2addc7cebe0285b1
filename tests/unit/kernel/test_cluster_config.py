"""A node's cluster configuration, and a real three-node cluster: it forms, replicates a stream
on every node, and keeps taking appends while one node is dead and after it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from services.kernel import nats_server
from services.kernel.nats_server import CLUSTER_NAME, cluster_block, config_text


def test_a_node_names_itself_its_cluster_and_routes_to_every_peer():
    # given three route ports, when node 1's block is written
    block = cluster_block("n1", 7001, [7000, 7001, 7002])
    # then it has its own server name (JetStream needs one), the cluster's name, its listen
    # address on loopback, and a route to every node
    assert 'server_name: "n1"' in block
    assert f'name: "{CLUSTER_NAME}"' in block
    assert 'listen: "127.0.0.1:7001"' in block
    for port in (7000, 7001, 7002):
        assert f'"nats-route://127.0.0.1:{port}"' in block
    # and a server's configuration carries it before its own lines, beside its JetStream store
    text = config_text(Path("/store"), 4222, 8222, cluster=block)
    assert text.startswith(block) and "sync_interval: always" in text


def test_a_single_server_has_no_cluster_lines():
    text = config_text(Path("/store"), 4222, 8222)
    assert "cluster" not in text and "server_name" not in text


@pytest.mark.integration
def test_a_three_node_cluster_keeps_every_append_through_a_node_killed_and_restarted(
    tmp_path: Path,
):
    # given a three-node cluster and a stream replicated on each node
    cluster = nats_server.start_cluster(tmp_path, 3)
    try:
        assert len(cluster.url.split(",")) == 3
        asyncio.run(_appends_survive(cluster))
    finally:
        cluster.stop()


async def _appends_survive(cluster: nats_server.EmbeddedCluster) -> None:
    nc = await nats.connect(cluster.url.split(","), reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await js.add_stream(name="C", subjects=["c.>"], num_replicas=3)
        await js.publish("c.x", b"before")
        leader = (await js.stream_info("C")).cluster.leader  # type: ignore[union-attr]
        # when the stream's leader is SIGKILLed, an append goes on once another is elected
        index = int(str(leader).removeprefix("n"))
        cluster.kill(index)
        await _publish_until_stored(js, b"while down")
        # and when it comes back, it catches up; then every append is there once
        await asyncio.to_thread(cluster.restart, index)
        await js.publish("c.x", b"after")
        info = await js.stream_info("C")
        assert info.state.messages == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        assert all(r.current for r in info.cluster.replicas or [])
    finally:
        await nc.close()


async def _publish_until_stored(js, data: bytes) -> None:
    from services.kernel.transient import retry_transient

    await retry_transient(
        lambda: js.publish("c.x", data, headers={"Nats-Msg-Id": "once"}),
        what="test append",
        retry_for=30,
    )

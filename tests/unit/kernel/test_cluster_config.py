"""A clustered node's configuration. (The cluster itself, formed, provisioned with every stream
and bucket on each node, and its nodes killed and restarted under the studio, is
``tests/reliability/test_cluster.py``.)"""

from __future__ import annotations

from pathlib import Path

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

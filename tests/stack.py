"""The studio's processes, started for a test: nats-server, the projects service, the gateway.

Each service is a real child process (``python -m services.<name>``), as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.bus_access import access, provision_now
from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedNats, free_port
from services.kernel.process import stop_gently

#: Every service; a test that needs fewer starts fewer (the gateway reports on those only).
SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
#: Tests sign in often and work fast, all from one IP: limits no test but the limits' own
#: (``tests/integration/test_limits.py``, which sets its own) ever meets.
TEST_LIMITS = {
    f"STUDIO_{name}": value
    for name, value in {
        "LOGIN_RATE_LIMIT": "100000/minute",
        "RATE_LIMIT_FREE": "100000/minute",
        "RATE_LIMIT_BASIC": "100000/minute",
        "RATE_LIMIT_PREMIUM": "100000/minute",
        "RATE_LIMIT_ANONYMOUS": "100000/minute",
        "STREAMS_PER_USER": "100000",
        "IMPORTS_PER_USER": "1000",
        "QUEUED_RUNS_PER_USER": "1000",
    }.items()
}


class Stack:
    def __init__(self, root: Path, services: tuple[str, ...] = SERVICES, **env: str) -> None:
        self.services = services
        self.root = root
        self.workspace = root / "workspace"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.nats: EmbeddedNats | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.imports = root / "imports"
        self.imports.mkdir(parents=True, exist_ok=True)
        self.extra_env = env

    @property
    def nats_url(self) -> str:
        """The operator's URL (every permission), for tests' own NATS clients; the services
        connect with their own credentials."""
        assert self.nats is not None
        return self.nats.operator_url

    def env(self) -> dict[str, str]:
        return os.environ | {
            "STUDIO_NATS_URL": self.nats.url if self.nats else self.nats_url,  # asserts
            "STUDIO_WORKSPACE": str(self.workspace),
            "STUDIO_INSTANCE": "test",
            "STUDIO_HOST": "127.0.0.1",
            "STUDIO_PORT": str(self.port),
            "STUDIO_LOG_LEVEL": "WARNING",
            "STUDIO_IMPORT_ROOTS": str(self.imports),
            "STUDIO_SERVICES": ",".join(self.services),
            **TEST_LIMITS,
            **self.extra_env,
        }

    def start_nats(self, port: int = 0) -> None:
        self.nats = nats_server.start(self.root / "nats", port, access=access(self.workspace))
        provision_now(self.nats.operator_url)

    def start(self, name: str, module: str | None = None, **env: str) -> None:
        """Start ``services.<module or name>`` as ``name``, with extra environment."""
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{module or name}"],
            env=self.env() | env,
            stdout=log,
            stderr=log,
        )

    def stop(self, name: str) -> None:
        stop_gently(self.procs.pop(name))

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def up(self) -> Stack:
        if self.nats is None:
            self.start_nats()
        for name in (*self.services, "gateway"):
            if name not in self.procs:
                self.start(name)
        self.wait_healthy()
        return self

    def down(self) -> None:
        for name in list(self.procs):
            self.resume(name)
            self.stop(name)
        if self.nats is not None:
            self.nats.stop()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            try:
                resp = httpx.get(f"{self.base_url}/health", timeout=2)
                if resp.status_code == 200:
                    return
                last = resp.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"the stack did not become healthy: {last}")

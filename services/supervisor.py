"""``studio up``: NATS, then every service, then the gateway, as child processes; stops them in
reverse order on Ctrl-C and restarts a service that dies."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import IO

from services.kernel import nats_server
from services.kernel.bus import check_nats
from services.kernel.process import spawn, stop_gently
from services.kernel.settings import Settings

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


class StartupError(SystemExit):
    """Why the studio could not start, for people."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = spawn(self.argv, self.env)

    def stop(self) -> None:
        if self.process is not None:
            stop_gently(self.process)


def check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As uvicorn does: a port with connections in TIME_WAIT is free; one with a listener not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"Port {port} on {host} is already in use ({exc.strerror}). Is another studio "
                "running? Stop it, or pick another port with --port."
            ) from None


def lock_workspace(workspace: Path) -> IO[str]:
    run = workspace / "run"
    run.mkdir(parents=True, exist_ok=True)
    handle = (run / "studio.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StartupError(
            f"Another studio is already running on the workspace {workspace}. Stop it, or use "
            "--workspace to choose another folder."
        ) from None
    return handle


def wait_healthy(
    url: str, children: list[Child], stopping: list[int], timeout: float = 60.0
) -> bool:
    """True once the gateway reports every part healthy; False if asked to stop first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping:
            return False
        for child in children:
            if child.process and child.process.poll() is not None:
                raise StartupError(f"{child.name} exited during startup; see its log above")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            if r.status == 200:
                return True
        time.sleep(0.2)
    raise StartupError(f"the studio did not become healthy within {timeout:.0f}s; see the logs")


def banner(url: str, workspace: Path) -> str:
    return f"""
  AI Studio is running at {url}
    API docs:   {url}/docs
    Health:     {url}/health
    Workspace:  {workspace}

  Try:  curl -s -X POST {url}/api/v1/projects -H 'Content-Type: application/json' \\
             -d '{{"name": "My first project"}}'
  Stop: Ctrl-C
"""


def up(host: str, port: int, workspace: Path) -> int:
    stopping: list[int] = []
    signal.signal(signal.SIGINT, lambda sig, _frame: stopping.append(sig))
    signal.signal(signal.SIGTERM, lambda sig, _frame: stopping.append(sig))
    workspace = workspace.resolve()
    check_port_free(host, port)
    lock = lock_workspace(workspace)
    nats_url = os.environ.get("STUDIO_NATS_URL")
    embedded = None
    if nats_url:
        asyncio.run(check_nats(nats_url, Settings.from_env().connect_timeout))
    else:
        try:
            embedded = nats_server.start(workspace / "nats")
        except (RuntimeError, OSError) as exc:
            raise StartupError(f"Could not start the embedded nats-server: {exc}") from None
        nats_url = embedded.url
    env = os.environ | {
        "STUDIO_NATS_URL": nats_url,
        "STUDIO_WORKSPACE": str(workspace),
        "STUDIO_INSTANCE": os.environ.get("STUDIO_INSTANCE", "local"),
    }
    names = Settings.from_env().services
    children = [Child(name, [sys.executable, "-m", f"services.{name}"], env) for name in names]
    gateway_env = env | {"STUDIO_HOST": host, "STUDIO_PORT": str(port)}
    children.append(Child("gateway", [sys.executable, "-m", "services.gateway"], gateway_env))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        for child in children:
            child.start()
        if not wait_healthy(url, children, stopping):
            return 0
        (workspace / "run" / "studio.json").write_text(
            json.dumps({"pid": os.getpid(), "url": url, "nats_url": nats_url})
        )
        print(banner(url, workspace), flush=True)
        return supervise(children, embedded, stopping)
    finally:
        print("Stopping AI Studio…", flush=True)
        for child in reversed(children):
            child.stop()
        if embedded is not None:
            embedded.stop()
        (workspace / "run" / "studio.json").unlink(missing_ok=True)
        lock.close()


def supervise(
    children: list[Child], embedded: nats_server.EmbeddedNats | None, stopping: list[int]
) -> int:
    """Restart a child that dies (with backoff); stop everything if NATS dies."""
    while not stopping:
        time.sleep(0.2)
        if embedded is not None and embedded.process.poll() is not None:
            print(f"nats-server exited (see {embedded.log_path}); stopping.", file=sys.stderr)
            return 1
        now = time.monotonic()
        for child in children:
            if child.process and child.process.poll() is not None:
                child.restarts = [t for t in child.restarts if now - t < 300]
                delay = RESTART_BACKOFF_S[min(len(child.restarts), len(RESTART_BACKOFF_S) - 1)]
                print(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"restarting in {delay}s",
                    file=sys.stderr,
                    flush=True,
                )
                child.restarts.append(now)
                child.process = None
                deadline = now + delay
                while time.monotonic() < deadline and not stopping:
                    time.sleep(0.1)
                if not stopping:
                    child.start()
    return 0

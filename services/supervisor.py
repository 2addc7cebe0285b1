"""``studio up``: NATS, then every service, then the gateway, as child processes; stops them in
reverse order on Ctrl-C and restarts a service that dies.

The embedded nats-server is restarted too, on the same port with the same store, so that the
services (which reconnect by themselves) find their streams again; only a server that keeps
crashing stops the studio.
"""

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

from services import bus_access, deployment, firstadmin
from services.kernel import nats_server
from services.kernel.bus import check_nats, credentials
from services.kernel.process import spawn, stop_gently
from services.kernel.settings import Settings

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
#: A service that ran this long before it died was not crash-looping: it is restarted after the
#: first backoff step, not after a wait grown by deaths long past (a service killed now and then
#: stayed down for 30 s once it had died five times within five minutes, however long each ran).
STABLE_AFTER_S = 30.0

#: The embedded nats-server is given up on at its NATS_MAX_CRASHES-th crash within the window;
#: before that it is restarted after each crash, waiting longer each time.
NATS_MAX_CRASHES = 5
NATS_CRASH_WINDOW_S = 60.0
NATS_BACKOFF_S = (0.25, 0.5, 1.0, 2.0)
NATS_READY_TIMEOUT_S = 20.0
#: How long a service may take to stop after SIGTERM before it is killed (as ``docker stop``).
STOP_GRACE_S = 10.0
#: How long ``studio up`` waits for the identity service to confirm the first admin.
ADMIN_CONFIRM_S = 30.0


class StartupError(SystemExit):
    """Why the studio could not start, for people."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    #: Monotonic time of its last start.
    started_at: float = 0.0
    #: Monotonic time at which a child that died is started again.
    restart_at: float | None = None

    def start(self) -> None:
        self.restart_at = None
        self.started_at = time.monotonic()
        self.process = spawn(self.argv, self.env)

    def stop(self) -> None:
        if self.process is not None and not stop_gently(self.process, STOP_GRACE_S):
            say(f"{self.name} did not stop within {STOP_GRACE_S:g}s of SIGTERM and was killed")


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
    url: str,
    children: list[Child],
    stopping: list[int],
    timeout: float = 60.0,
    embedded: nats_server.EmbeddedNats | None = None,
) -> bool:
    """True once the gateway reports every part healthy; False if asked to stop first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping:
            return False
        if embedded is not None and embedded.process.poll() is not None:
            raise StartupError(f"nats-server exited during startup; see {embedded.log_path}")
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
    Studio:     {url}/  (open it in a browser and sign in)
    API docs:   {url}/docs
    Health:     {url}/health
    Workspace:  {workspace}

  Scripts: every request but /health needs a token: sign in (below), then
  Try:  curl -s -X POST {url}/api/v1/projects -H "Authorization: Bearer $TOKEN" \\
             -H 'Content-Type: application/json' -d '{{"name": "My first project"}}'
  Stop: Ctrl-C
"""


def start_nats(workspace: Path) -> tuple[str, nats_server.EmbeddedNats | None]:
    """``STUDIO_NATS_URL`` checked with this deployment's credentials, or an embedded server
    that admits only the deployment's users (secrets generated into the workspace once), its
    event streams created; returns the URL the services connect to, and the server if any."""
    settings = Settings.from_env()
    if "nats_url" in settings.model_fields_set:  # STUDIO_NATS_URL, in the env or .env
        options = credentials(settings, bus_access.GATEWAY)
        asyncio.run(check_nats(settings.nats_url, settings.connect_timeout, **options))
        return settings.nats_url, None
    if settings.stream_replicas > 1:  # refused before a server starts, not after a minute
        raise StartupError(
            f"STUDIO_STREAM_REPLICAS={settings.stream_replicas} needs a NATS cluster, and the "
            "embedded nats-server is one node: point STUDIO_NATS_URL at a cluster of at least "
            "that many nodes, or leave STUDIO_STREAM_REPLICAS at 1."
        )
    try:
        embedded = nats_server.start(workspace / "nats", access=bus_access.access(workspace))
        bus_access.provision_now(embedded.operator_url, settings.stream_replicas)
    except (RuntimeError, OSError) as exc:
        raise StartupError(f"Could not start the embedded nats-server: {exc}") from None
    return embedded.url, embedded


def up(host: str, port: int, workspace: Path) -> int:
    stopping: list[int] = []
    signal.signal(signal.SIGINT, lambda sig, _frame: stopping.append(sig))
    signal.signal(signal.SIGTERM, lambda sig, _frame: stopping.append(sig))
    workspace = workspace.resolve()
    check_port_free(host, port)
    lock = lock_workspace(workspace)
    nats_url, embedded = start_nats(workspace)
    # Embedded: each service finds its own credentials in the workspace, none in the env.
    env = {k: v for k, v in os.environ.items() if not (embedded and k == "STUDIO_NATS_CREDS")}
    env |= {
        "STUDIO_NATS_URL": nats_url,
        "STUDIO_WORKSPACE": str(workspace),
        "STUDIO_INSTANCE": os.environ.get("STUDIO_INSTANCE", "local"),
    }
    names = deployment.settings().services
    env["STUDIO_SERVICES"] = ",".join(names)  # the gateway reports on what was started
    # The first admin's generated password goes to the identity service alone.
    admin = firstadmin.generate(workspace, Settings.from_env().admin_password)
    children = [
        Child(name, [sys.executable, "-m", f"services.{name}"], env | _admin_env(name, admin))
        for name in names
    ]
    gateway_env = env | {"STUDIO_HOST": host, "STUDIO_PORT": str(port)}
    children.append(Child("gateway", [sys.executable, "-m", "services.gateway"], gateway_env))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        for child in children:
            child.start()
        if not wait_healthy(url, children, stopping, embedded=embedded):
            return 0
        (workspace / "run" / "studio.json").write_text(
            json.dumps({"pid": os.getpid(), "url": url, "nats_url": nats_url})
        )
        print(banner(url, workspace), flush=True)
        result = firstadmin.outcome(workspace, ADMIN_CONFIRM_S) if admin else None
        print(firstadmin.announcement(url, admin, result), flush=True)
        keeper = NatsKeeper(embedded) if embedded is not None else None
        return supervise(children, keeper, stopping)
    finally:
        print("Stopping AI Studio…", flush=True)
        for child in reversed(children):
            child.stop()
        if embedded is not None:
            embedded.stop()
        (workspace / "run" / "studio.json").unlink(missing_ok=True)
        lock.close()


def _admin_env(name: str, admin: firstadmin.FirstAdmin | None) -> dict[str, str]:
    return admin.env() if admin is not None and name == "identity" else {}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class NatsKeeper:
    """Keeps the embedded nats-server running: restarts it on the same port and store after a
    crash, with backoff, and gives up at the ``max_crashes``-th crash within ``window_s``."""

    server: nats_server.EmbeddedNats
    max_crashes: int = NATS_MAX_CRASHES
    window_s: float = NATS_CRASH_WINDOW_S
    backoff_s: tuple[float, ...] = NATS_BACKOFF_S
    ready_timeout_s: float = NATS_READY_TIMEOUT_S
    crashes: list[float] = field(default_factory=list)

    def alive(self, stopping: list[int]) -> bool:
        """True while the server runs (restarting it if it died); False once given up."""
        if stopping or self.server.process.poll() is None:
            return True
        how = f"exited with code {self.server.process.returncode}"
        while self._crashed(how, stopping):
            if stopping:
                return True
            try:
                self.server.restart(ready_timeout=self.ready_timeout_s)
            except (RuntimeError, OSError) as exc:
                how = f"could not be restarted ({str(exc).splitlines()[0]})"
                continue
            say(f"nats-server is running again on {self.server.url}")
            return True
        return False

    def _crashed(self, how: str, stopping: list[int]) -> bool:
        """Count a crash and wait out the backoff; False when it is one crash too many."""
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < self.window_s] + [now]
        count, log_path = len(self.crashes), self.server.log_path
        if count >= self.max_crashes:
            say(
                f"nats-server {how}: {count} crashes within {self.window_s:g}s, giving up and "
                f"stopping the studio. See the nats-server log: {log_path}"
            )
            return False
        delay = self.backoff_s[min(count - 1, len(self.backoff_s) - 1)]
        say(
            f"nats-server {how} (crash {count} of {self.max_crashes} allowed within "
            f"{self.window_s:g}s); restarting it on port {self.server.port} with the same store "
            f"in {delay:g}s. Its log: {log_path}"
        )
        deadline = now + delay
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.05)
        return True


def supervise(children: list[Child], keeper: NatsKeeper | None, stopping: list[int]) -> int:
    """Restart a child that dies (with backoff) and the embedded NATS server; 1 if NATS keeps
    crashing, 0 when asked to stop."""
    while not stopping:
        time.sleep(0.2)
        if keeper is not None and not keeper.alive(stopping):
            return 1
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None:
                if now >= child.restart_at and not stopping:
                    child.start()
            elif child.process and child.process.poll() is not None:
                child.restarts = [t for t in child.restarts if now - t < 300]
                if now - child.started_at >= STABLE_AFTER_S:
                    child.restarts.clear()  # it ran well: a death, not a crash loop
                delay = RESTART_BACKOFF_S[min(len(child.restarts), len(RESTART_BACKOFF_S) - 1)]
                say(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"restarting in {delay}s"
                )
                child.restarts.append(now)
                child.process = None
                child.restart_at = now + delay
    return 0

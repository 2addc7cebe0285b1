"""The studio's processes, started for a test: nats-server, the projects service, the gateway.

Each service is a real child process (``python -m services.<name>``), as in production. Every
stack has the identity service and a first admin (``ADMIN``, ``ADMIN_PASSWORD``); ``token()``,
``headers()`` and ``client()`` are signed in as that admin, ``sign_in`` as anyone.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.bus_access import access, provision_now
from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedCluster, EmbeddedNats, free_port
from services.kernel.process import stop_gently

#: Every service; a test that needs fewer starts fewer (the gateway reports on those only).
SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
#: The first admin of every test stack, and the password it is created with.
ADMIN = "admin"
ADMIN_PASSWORD = "test-admin-password"
API = "/api/v1"
#: How long the services of a stack may take to stop on SIGTERM before they are killed.
STOP_GRACE_S = 10.0
#: How long a studio may take to become healthy before a test fails: a bound, never a wait. On a
#: loaded 2-core machine a trainer or exporter importing torch has taken more than 30 s.
UP_S = 120.0
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
    def __init__(
        self, root: Path, services: tuple[str, ...] = SERVICES, nats_nodes: int = 1, **env: str
    ) -> None:
        """``nats_nodes`` > 1: the studio runs on a JetStream cluster of that many nodes
        (``self.cluster``), every stream replicated on each."""
        # Nothing answers without a signed-in caller: every stack can sign in.
        self.services = services if "identity" in services else ("identity", *services)
        self.root = root
        self.workspace = root / "workspace"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.nats: EmbeddedNats | None = None
        self.nats_nodes = nats_nodes
        self.cluster: EmbeddedCluster | None = None
        if nats_nodes > 1:
            env = {"STUDIO_STREAM_REPLICAS": str(nats_nodes)} | env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.imports = root / "imports"
        self.imports.mkdir(parents=True, exist_ok=True)
        self.extra_env = env
        # One secret for the stack's life: a restarted gateway honours the tokens it signed.
        self.jwt_secret = secrets.token_urlsafe(48)
        self._token: tuple[str, float] | None = None

    @property
    def nats_url(self) -> str:
        """The operator's URL (every permission), for tests' own NATS clients; the services
        connect with their own credentials."""
        if self.cluster is not None:
            return self.cluster.operator_url
        assert self.nats is not None
        return self.nats.operator_url

    def env(self) -> dict[str, str]:
        # One compute thread per process: a test studio shares two cores with its client (and
        # a browser), and torch's threads spin waiting for each other when oversubscribed (a
        # detector's batch measured 12 s with two threads, 0.9 s with one, on a busy machine).
        return (
            os.environ
            | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            | {
                "STUDIO_NATS_URL": self._services_nats_url(),
                "STUDIO_WORKSPACE": str(self.workspace),
                "STUDIO_INSTANCE": "test",
                "STUDIO_HOST": "127.0.0.1",
                "STUDIO_PORT": str(self.port),
                "STUDIO_LOG_LEVEL": "WARNING",
                "STUDIO_IMPORT_ROOTS": str(self.imports),
                "STUDIO_SERVICES": ",".join(self.services),
                "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "STUDIO_JWT_SECRET": self.jwt_secret,
                **TEST_LIMITS,
                **self.extra_env,
            }
        )

    def _services_nats_url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        return self.nats.url if self.nats else self.nats_url  # asserts

    def start_nats(self, port: int = 0) -> None:
        if self.nats_nodes > 1:
            self.cluster = nats_server.start_cluster(
                self.root / "nats", self.nats_nodes, access(self.workspace)
            )
            provision_now(self.cluster.operator_url, self.nats_nodes)
            return
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

    def up(self, timeout: float = UP_S) -> Stack:
        if self.nats is None and self.cluster is None:
            self.start_nats()
        for name in (*self.services, "gateway"):
            if name not in self.procs:
                self.start(name)
        self.wait_healthy(timeout)
        return self

    def down(self) -> None:
        """Every process asked to stop at once (they share nothing but NATS), then waited for
        (killed past the grace), then NATS."""
        procs = [self.procs.pop(name) for name in list(self.procs)]
        for proc in procs:
            proc.send_signal(signal.SIGCONT)  # a paused one could not hear SIGTERM
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:  # waited for, not signalled again (uvicorn cuts short on a second)
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nats is not None:
            self.nats.stop()
        if self.cluster is not None:
            self.cluster.stop()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait_healthy(self, timeout: float = UP_S) -> None:
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

    # --- signed in --------------------------------------------------------------------------

    def sign_in(self, user_id: str, password: str, timeout: float = 30.0) -> str:
        """An access token of ``user_id``; waits while the identity service starts (a 401 until
        it has created the first admin, a 503 until it answers)."""
        return str(self.sign_in_answer(user_id, password, timeout)["access_token"])

    def sign_in_answer(self, user_id: str, password: str, timeout: float = 30.0) -> dict:
        return sign_in(self.base_url, user_id, password, timeout)

    def token(self) -> str:
        """The first admin's access token, signed in once and again shortly before it expires."""
        if self._token is None or self._token[1] < time.monotonic() + 60:
            answer = self.sign_in_answer(ADMIN, ADMIN_PASSWORD)
            self._token = (answer["access_token"], time.monotonic() + answer["expires_in"])
        return self._token[0]

    def headers(self, token: str | None = None) -> dict[str, str]:
        """``Authorization`` for ``token``, the first admin's by default."""
        return {"Authorization": f"Bearer {token or self.token()}"}

    def client(self, token: str | None = None, **kwargs: object) -> httpx.AsyncClient:
        """An async client of the gateway, signed in (as the first admin by default)."""
        options: dict = {"timeout": 15} | kwargs
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers(token), **options)

    def sync_client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        """A blocking client of the gateway, signed in (as the first admin by default)."""
        options: dict = {"timeout": 15} | kwargs
        return httpx.Client(base_url=self.base_url, headers=self.headers(token), **options)

    def create_user(
        self, user_id: str, password: str, role: str = "user", tier: str = "premium"
    ) -> None:
        """A user made by the first admin (premium, so rate limits stay out of tests' way)."""
        body = {"user_id": user_id, "password": password, "site_role": role, "tier": tier}
        resp = httpx.post(
            f"{self.base_url}{API}/users", json=body, headers=self.headers(), timeout=15
        )
        if resp.status_code != 201:
            raise RuntimeError(f"user {user_id} not created: {resp.status_code} {resp.text}")


def sign_in(base_url: str, user_id: str, password: str, timeout: float = 30.0) -> dict:
    """The token answer of signing in at ``base_url``; waits while the identity service starts
    (401 until it has created the first admin, 503 until it answers)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.post(
            f"{base_url}{API}/auth/token",
            data={"username": user_id, "password": password},
            timeout=15,
        )
        if resp.status_code == 200:
            answer: dict = resp.json()
            return answer
        if time.monotonic() > deadline or resp.status_code not in (401, 429, 503):
            raise RuntimeError(f"{user_id} could not sign in: {resp.status_code} {resp.text}")
        time.sleep(0.2)


def admin_headers(base_url: str) -> dict[str, str]:
    """``Authorization`` of the first admin of a studio started with ``ADMIN_PASSWORD``."""
    token = sign_in(base_url, ADMIN, ADMIN_PASSWORD)["access_token"]
    return {"Authorization": f"Bearer {token}"}

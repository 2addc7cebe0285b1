"""The newcomer's journey through ``studio up``: start, create, watch, stop, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE, CompletedProcess

import httpx
import pytest

from services.kernel.nats_server import free_port
from tests.stack import ADMIN_PASSWORD, admin_headers

pytestmark = pytest.mark.e2e

STUDIO = [sys.executable, "-m", "services.cli"]


def env_without_nats() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}


class Studio:
    def __init__(self, workspace: Path, port: int, services: str | None = None) -> None:
        """``services``: STUDIO_SERVICES, when not every service of the deployment."""
        self.url = f"http://127.0.0.1:{port}"
        self.log = workspace.parent / f"studio-{port}-{time.monotonic_ns()}.log"
        env = env_without_nats() | {"STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD}
        self.proc = subprocess.Popen(
            [*STUDIO, "up", "--port", str(port), "--workspace", str(workspace)],
            env=env | ({"STUDIO_SERVICES": services} if services else {}),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as a terminal would: Ctrl-C goes to the studio alone
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if "AI Studio is running" in self.log.read_text():
                return
            time.sleep(0.1)
        raise TimeoutError(self.log.read_text())

    def ctrl_c(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)


def test_up_create_watch_stop_restart_and_the_project_is_still_there(tmp_path: Path):
    workspace, port = tmp_path / "ws", free_port()
    studio = Studio(workspace, port)
    try:
        studio.wait_ready()
        signed_in = admin_headers(studio.url)
        resp = httpx.post(
            f"{studio.url}/api/v1/projects", json={"name": "Birds"}, headers=signed_in, timeout=15
        )
        assert resp.status_code == 201, resp.text
        pid = resp.json()["data"]["id"]
        events = f"{studio.url}/api/v1/projects/{pid}/events"
        with httpx.stream("GET", events, headers=signed_in, timeout=15) as sse:
            lines = sse.iter_lines()
            assert "event: project_created" in [next(lines) for _ in range(4)]
        assert "curl" in studio.log.read_text()  # the banner shows the first call to make
    finally:
        code = studio.ctrl_c()
    assert code == 0
    stopped = studio.log.read_text()
    assert "Traceback" not in stopped
    # every service stopped by itself on SIGTERM, none had to be killed
    assert "was killed" not in stopped, stopped[-3000:]
    # nothing of the studio is left running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{studio.url}/health", timeout=2)
    # The studio again on the same port and workspace: the services that keep and show the
    # project are enough to find it (each service's start on a used workspace, the trainer's
    # and exporter's included, is the fault suite's: tests/reliability/test_chaos.py restarts
    # every one of them there); the trainer and exporter cost seconds of CPU to start.
    again = Studio(workspace, port, services="identity,projects")
    try:
        again.wait_ready()
        got = httpx.get(
            f"{again.url}/api/v1/projects/{pid}", headers=admin_headers(again.url), timeout=15
        )
        assert got.status_code == 200
        assert got.json()["data"]["name"] == "Birds"
    finally:
        assert again.ctrl_c() == 0


def run_all(*argvs: list[str], env: dict[str, str] | None = None) -> list[CompletedProcess[str]]:
    """Each command run to its end, all at once (each waits seconds for what it cannot reach)."""
    procs = [
        subprocess.Popen(argv, env=env or env_without_nats(), stdout=PIPE, stderr=PIPE, text=True)
        for argv in argvs
    ]
    done = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        done.append(CompletedProcess(argv, proc.returncode, out, err))
    return done


def test_a_busy_port_or_workspace_fails_with_a_clear_message(tmp_path: Path):
    port = free_port()
    # a studio holds the port and the workspace from its start: one without torch will do
    studio = Studio(tmp_path / "ws", port, services="identity")
    try:
        studio.wait_ready()
        busy, same_ws = run_all(
            [*STUDIO, "up", "--port", str(port), "--workspace", str(tmp_path / "other")],
            [*STUDIO, "up", "--port", str(free_port()), "--workspace", str(tmp_path / "ws")],
        )
        assert busy.returncode == 2
        assert f"Port {port}" in busy.stderr and "already in use" in busy.stderr
        assert same_ws.returncode == 2
        assert "Another studio is already running" in same_ws.stderr
        for done in (busy, same_ws):
            assert "Traceback" not in done.stderr
    finally:
        assert studio.ctrl_c() == 0


def test_nats_not_running_gives_a_message_not_a_traceback(tmp_path: Path):
    dead = f"nats://127.0.0.1:{free_port()}"
    env = env_without_nats() | {
        "STUDIO_NATS_URL": dead,
        "STUDIO_WORKSPACE": str(tmp_path),
        "STUDIO_NATS_CONNECT_TIMEOUT": "2",
    }
    up, *services = run_all(
        [*STUDIO, "up", "--port", str(free_port()), "--workspace", str(tmp_path)],
        *([sys.executable, "-m", f"services.{service}"] for service in ("projects", "gateway")),
        env=env,
    )
    assert up.returncode != 0
    assert "Cannot reach NATS" in up.stderr
    assert "Traceback" not in up.stderr
    for done in services:
        assert done.returncode == 2, done.args
        assert "Cannot reach NATS" in done.stderr
        assert "Traceback" not in done.stderr

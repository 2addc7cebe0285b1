"""A newcomer's first ``studio up`` without STUDIO_ADMIN_PASSWORD: a password is generated,
printed once with the line that signs in, and works; the next ``studio up`` prints none and the
password still works."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.kernel.nats_server import free_port
from tests.stack import sign_in

pytestmark = pytest.mark.e2e

PASSWORD_LINE = re.compile(r"^\s*password:\s+(\S+)\s*$", re.MULTILINE)


#: The first admin is the identity service's and the gateway's affair: a studio of those (no
#: torch to import) starts in a few seconds instead of many; ``test_studio_up`` starts them all.
SERVICES = "identity,projects"


def up(workspace: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_SERVICES"] = SERVICES
    argv = ["up", "--port", str(port), "--workspace", str(workspace)]
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *argv],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace")
        assert proc.poll() is None, out
        if text in out:
            return out
        time.sleep(0.2)
    raise TimeoutError(log.read_text(errors="replace"))


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(60)


def test_a_generated_password_is_printed_once_and_signs_in(tmp_path: Path) -> None:
    workspace, port = tmp_path / "ws", free_port()
    url = f"http://127.0.0.1:{port}"
    first_log = tmp_path / "first.log"
    studio = up(workspace, port, first_log)
    try:
        out = wait_for(first_log, "Sign in:", studio)
        passwords = PASSWORD_LINE.findall(out)
        assert len(passwords) == 1, out
        password = passwords[0]
        assert len(password) >= 24
        assert f"-d username=admin -d password={password} {url}/api/v1/auth/token" in out
        answer = sign_in(url, "admin", password)
        assert answer["access_token"]
    finally:
        assert stop(studio) == 0
    second_log = tmp_path / "second.log"
    again = up(workspace, port, second_log)
    try:
        out = wait_for(second_log, "Sign in:", again)
        assert password not in out and not PASSWORD_LINE.search(out)
        assert sign_in(url, "admin", password)["access_token"]
    finally:
        assert stop(again) == 0
    for log in (first_log, second_log):
        assert "Traceback" not in log.read_text(errors="replace")

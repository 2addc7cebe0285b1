"""Child processes that a supervisor stops itself, in order."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
from collections.abc import Mapping
from typing import IO


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the supervisor dies without stopping it.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    argv: list[str], env: Mapping[str, str] | None = None, output: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, so a Ctrl-C reaches only the supervisor."""
    return subprocess.Popen(
        argv,
        env=dict(env) if env is not None else None,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop_gently(process: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL if it does not exit within ``timeout``; False if it was killed."""
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True

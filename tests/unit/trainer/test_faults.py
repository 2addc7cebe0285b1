"""The fault-injection hook: inert unless set, exact when set, loud when mistyped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from services.trainer.engine import faults

KILL = "from services.trainer.engine.faults import fault_point as f; f('{0}', {1}); print('alive')"


def hit(point: str, epoch: int, spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if spec is not None:
        env[faults.ENV] = spec
    code = KILL.format(point, epoch)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_the_hook_is_inert_unless_set() -> None:
    assert hit("after_upload", 2, None).stdout == "alive\n"


def test_the_hook_kills_only_at_its_point_and_epoch() -> None:
    assert hit("after_upload", 2, "after_upload:2").returncode == -signal.SIGKILL
    assert hit("after_upload", 3, "after_upload:2").stdout == "alive\n"
    assert hit("after_append", 2, "after_upload:2,after_append:3").stdout == "alive\n"


def test_a_mistyped_point_fails_loudly() -> None:
    assert faults.parse("after_upload:2, after_append:3") == {
        ("after_upload", 2),
        ("after_append", 3),
    }
    with pytest.raises(ValueError, match="not POINT:EPOCH"):
        faults.parse("after_uplaod:2")
    with pytest.raises(ValueError, match="not POINT:EPOCH"):
        faults.parse("after_upload")

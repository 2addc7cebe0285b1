"""The prepared GPU check, end to end on the CPU at tiny sizes, so it cannot rot before a GPU is
at hand; and its offline wheel loading. Runs ``bench.gpu_check`` in a child process, as on the
GPU machine. Imports the standard library and ``bench.gpu_check`` (stdlib-only at import).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.gpu_check import bring_wheels

ROOT = Path(__file__).resolve().parents[2]


def test_every_part_of_the_check_runs_on_the_cpu(tmp_path: Path) -> None:
    # Given a machine with no GPU, when the check runs at tiny sizes
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--tiny", "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    # Then it exits 0 and prints one table with every part in it
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("gpu_check (tiny")[1]
    for part in ("engine img/s", "plain fp32 img/s", "loader alone", "resume", "parity"):
        assert part in table
    assert "FAILED" not in table and "skipped" not in table
    figures = json.loads(out.read_text())
    assert figures["failed"] is False
    engine = figures["smallcnn/engine img/s min/med/max"]
    plain = figures["smallcnn/plain fp32 img/s min/med/max"]
    assert min(engine["rates"]) > 0 and min(plain["rates"]) > 0 and plain["engine_ratio"] > 0
    loader = figures["loader/smallcnn loader alone / step alone"]
    assert loader["loader"] > 0 and loader["step"] > 0
    # And a run stopped after epoch 1 and resumed ends exactly where an uninterrupted one does
    resume = next(v for k, v in figures.items() if k.startswith("resume/"))
    assert resume["exact"] is True
    assert all(a == b for a, b in resume["losses"])
    parity = figures["export/parity (GPU-trained checkpoint)"]
    assert parity["passed"] is True
    latency = figures["export/onnxruntime batch 32 ms (CPU provider)"]
    assert latency["onnx_ms"] > 0 and latency["torch_ms"] > 0


def test_wheels_brought_along_are_importable_without_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a wheel of a module this machine lacks, in the wheels folder
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "brought_along-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("brought_along/__init__.py", "ANSWER = 42\n")
        wheel.writestr("brought_along-1.0.dist-info/METADATA", "Name: brought_along\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    # When the check prepares its path
    missing = bring_wheels(wheels, ("brought_along", "surely_not_here_module"))
    # Then the brought module imports, what no wheel brings is reported, and a second call
    # does not unpack again
    assert missing == ["surely_not_here_module"]
    import brought_along

    assert brought_along.ANSWER == 42
    assert (wheels / "site" / ".brought_along-1.0-py3-none-any.whl.unpacked").exists()
    del sys.modules["brought_along"]  # imported again from the unpacked folder below
    assert bring_wheels(wheels, ("brought_along",)) == []

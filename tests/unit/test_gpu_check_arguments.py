"""The prepared GPU check refuses bad arguments before any work, as a usage error (exit 2) that
names the argument: a device this machine does not have, a model not in the zoo, sizes of zero,
below zero or outside a run's bounds, a JSON file in no folder (lost after the run). Issue 17:
it must not break, or half-run, on the day a GPU machine is at hand. Imports the standard
library and ``bench.gpu_check``.
"""

from __future__ import annotations

import sys

import pytest

from bench import gpu_check


@pytest.fixture(autouse=True)
def no_run(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The check itself replaced: a refusal must come before it; the path is left as it was."""
    started: list[object] = []

    def run(args: object, table: gpu_check.Table) -> None:
        started.append(args)
        table.data["seconds"] = 0.0

    monkeypatch.setattr(gpu_check, "run", run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    return started


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--device", "cuda:7"], "argument --device: device 'cuda:7' is not available"),
        (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        (["--images", "0"], "argument --images: must be at least 1, not 0"),
        (["--batch-size", "-4"], "argument --batch-size: must be at least 1, not -4"),
        (["--epochs", "two"], "argument --epochs: 'two' is not a int"),
        (["--rounds", "0"], "argument --rounds: must be at least 1, not 0"),
        (["--steps", "0"], "argument --steps: must be at least 1"),
        (["--resume-images", "0"], "argument --resume-images: must be at least 1"),
        (["--workers", "-2"], "argument --workers: must be at least -1, not -2"),
        (["--budget-s", "nan"], "argument --budget-s: must be at least 1, not nan"),
        (["--models", ""], "argument --models: '': expected names"),
        (["--models", "resnet50,,convnext_tiny"], "argument --models: 'resnet50,,convnext_tiny'"),
        (["--models", "resnet5O"], "argument --models: unknown resnet5O; expected smallcnn"),
        (["--image-size", "8"], "argument --image-size: 8 is outside 16-1024"),
        (["--batch-size", "100000"], "argument --batch-size: 100000 is outside 1-4096"),
        (["--epochs", "5000"], "argument --epochs: 5000 is outside 1-1000"),
        (["--json", "/no/such/folder/gpu.json"], "argument --json: /no/such/folder is not a"),
    ],
)
def test_a_bad_argument_is_a_usage_error_naming_it_before_any_work(
    argv: list[str], says: str, no_run: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a CPU machine (no CUDA device), when the check is asked with a bad argument
    with pytest.raises(SystemExit) as exited:
        gpu_check.main(["--device", "cpu", "--tiny", *argv])
    # Then it exits 2 with the argument named and why, and nothing of the check ran
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert err.startswith("usage: ") and "Traceback" not in err
    assert no_run == []


def test_good_arguments_reach_the_check(no_run: list[object]) -> None:
    # the refusals above are of their argument alone: the same call without it runs
    argv = ["--device", "cpu", "--tiny", "--models", "smallcnn, resnet18", "--workers", "-1"]
    assert gpu_check.main(argv) == 0
    (args,) = no_run
    assert args.models == "smallcnn,resnet18" and args.images == gpu_check.TINY["images"]  # type: ignore[attr-defined]

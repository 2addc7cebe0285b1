"""The benchmark scripts (issue 17) refuse bad sizes and names before any work, as a usage
error naming the argument (exit 2): no studio started, no figure half-made, no empty table that
looks like a run. ``bench.arguments`` holds the types they share; ``test_gpu_check_arguments``
covers the GPU check's. Imports the scripts (torch, httpx), runs none of their work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import pytest

from bench import __main__ as make_bench
from bench import arguments, export_bench, stream_bench, train_bench


def by_argv(main: Callable[[], object]) -> Callable[[list[str], pytest.MonkeyPatch], object]:
    def call(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> object:
        monkeypatch.setattr(sys, "argv", ["bench", *argv])
        return main()

    return call


SCRIPTS = {
    "make bench": lambda argv, _: make_bench.main(argv),
    "train_bench": by_argv(train_bench.main),
    "export_bench": by_argv(export_bench.main),
    "stream_bench": by_argv(stream_bench.main),
}


@pytest.mark.parametrize(
    ("script", "argv", "says"),
    [
        ("make bench", ["--only", "trainig"], "argument --only: unknown trainig; expected codec"),
        ("make bench", ["--only", "codec,,import"], "argument --only: 'codec,,import'"),
        ("make bench", ["--only", ""], "argument --only: '': expected names"),
        ("train_bench", ["--images-per-class", "0"], "--images-per-class: must be at least 1"),
        ("train_bench", ["--epochs", "-1"], "argument --epochs: must be at least 1, not -1"),
        ("train_bench", ["--batch-size", "many"], "argument --batch-size: 'many' is not a int"),
        ("train_bench", ["--image-size", "0"], "argument --image-size: must be at least 1"),
        ("export_bench", ["--repeats", "0"], "argument --repeats: must be at least 1, not 0"),
        ("export_bench", ["--models", ""], "argument --models: '': expected names"),
        ("stream_bench", ["--sse", "-5"], "argument --sse: must be at least 0, not -5"),
        ("stream_bench", ["--ws", "1.5"], "argument --ws: '1.5' is not a int"),
        ("stream_bench", ["--requests", "0"], "argument --requests: must be at least 1, not 0"),
    ],
)
def test_a_bad_size_or_name_is_a_usage_error_naming_it(
    script: str,
    argv: list[str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # when a benchmark is asked with a bad argument, then it exits 2 naming it, before any work
    with pytest.raises(SystemExit) as exited:
        SCRIPTS[script](argv, monkeypatch)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert says in captured.err, captured.err
    assert captured.err.startswith("usage: ") and captured.out == ""


def test_the_shared_types_keep_what_is_good() -> None:
    assert arguments.at_least(0)("0") == 0 and arguments.at_least(1, float)("2.5") == 2.5
    assert arguments.names(("a", "b"))(" b , a") == "b,a"
    assert arguments.typed(3)("4") == 4 and arguments.typed("smallcnn")("x") == "x"
    with pytest.raises(argparse.ArgumentTypeError, match=r"at least 1, not 0\.5"):
        arguments.at_least(1, float)("0.5")

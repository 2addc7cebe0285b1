"""The exporter starts without its engine: importing the service imports no torch, torchvision,
onnx or onnxruntime (seconds of CPU at every start, and most exporters never export); the first
export or prediction imports it, once, in its worker thread, and then behaves as before. The
trainer starts with torch (its devices, for their leases) but without torchvision and the
training loop, which its first run or evaluation imports.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from contracts import exports as x
from services.exporter import handlers
from services.exporter.handlers import OnFirstUse
from tests.unit.exporter.test_export_handlers import E, FakeJobs, completed_export, exports

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime")


def imported_by(module: str) -> list[str]:
    """Which of HEAVY a fresh interpreter holds after importing ``module``."""
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return [name for name in done.stdout.strip().split(",") if name]


def test_importing_the_exporter_service_imports_no_torch() -> None:
    assert imported_by("services.exporter.app") == []


def test_importing_the_trainer_service_imports_torch_but_not_torchvision() -> None:
    assert imported_by("services.trainer.app") == ["torch"]


def test_the_trainer_engines_names_are_those_of_its_modules() -> None:
    from services.trainer import engine
    from services.trainer.engine import ddp, devices, validation

    assert engine.pick_devices is devices.pick_devices and engine.train_on is ddp.train_on
    assert engine.validate is validation.validate
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        importlib.import_module("services.trainer.engine").nothing  # noqa: B018


def test_the_engine_is_made_once_by_its_first_use_whatever_the_threads() -> None:
    made: list[int] = []
    gate = threading.Event()

    def make() -> Any:
        gate.wait(5)  # every thread asks while the first is still making it
        made.append(1)
        return type("Engine", (), {"version": 3})()

    engine = OnFirstUse(make)
    assert made == []  # nothing is made by standing for it
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(engine.version)) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(30)
    assert answers == [3, 3, 3, 3] and made == [1]


def test_a_failed_make_is_tried_again_by_the_next_use() -> None:
    tries: list[int] = []

    def make() -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise ImportError("the first import failed")
        return "engine"

    engine = OnFirstUse(make)
    with pytest.raises(ImportError):
        engine.upper()
    assert engine.upper() == "ENGINE" and len(tries) == 2


class CountingEngine:
    """An engine that counts the Predictors made of it."""

    class BadImage(ValueError):
        pass

    def __init__(self) -> None:
        self.predictors = 0

    def Predictor(self) -> Any:
        self.predictors += 1

        class Predictor:
            def task(self, model: Path) -> str:
                return "classification"

            def predict(self, model: Path, images: list[bytes], top_k: int) -> Any:
                return [[("cat", 0.75)] for _ in images]

        return Predictor()


async def test_the_predictor_is_made_by_the_first_prediction_not_by_the_table() -> None:
    engine, repo = CountingEngine(), exports()
    await completed_export(repo)
    table = handlers.table(
        exports=repo, sources=None, jobs=FakeJobs(), files=Path("/x"), engine=engine
    )  # type: ignore[arg-type]
    assert engine.predictors == 0
    for _ in range(2):
        answer = await table[x.Predict](x.Predict(export_id=E, images=[b"png"], top_k=1), {})
        assert isinstance(answer, x.Predictions) and answer.results == [[("cat", 0.75)]]
    assert engine.predictors == 1

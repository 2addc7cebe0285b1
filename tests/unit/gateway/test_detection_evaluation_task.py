"""The task view of a detector's evaluation names its mAP (it has no accuracy); a classifier's
evaluation task reads as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts import training as t
from services.gateway.readmodels.tasks import TaskRow, TrainingTasks
from services.kernel.sqlite import session
from tests.unit.gateway.fold import folded

EVAL, RUN = "e" * 32, "r" * 32


async def task_result(tmp_path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    started = t.EvaluationStarted(evaluation_id=EVAL, run_id=RUN, checkpoint="best",
                                  subset="val", images=4, checkpoint_epoch=2)  # fmt: skip
    done = t.EvaluationCompleted(evaluation_id=EVAL, run_id=RUN, metrics=metrics, predictions=[])
    engine = await folded(tmp_path, TrainingTasks(), started, done)
    async with session(engine) as db:
        row = await db.get(TaskRow, EVAL)
    await engine.dispose()
    assert row is not None and row.status == "completed" and row.result is not None
    return row.result


async def test_a_detectors_evaluation_task_names_its_map(tmp_path: Path) -> None:
    result = await task_result(tmp_path / "d", {"task": "detection", "map": 0.41, "map50": 0.75})
    assert (result["map"], result["map50"], result["accuracy"]) == (0.41, 0.75, None)

    classifier = await task_result(tmp_path / "c", {"accuracy": 0.9})
    assert classifier["accuracy"] == 0.9 and "map" not in classifier

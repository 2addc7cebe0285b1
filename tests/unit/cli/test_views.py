"""Each command's view for people and its document for scripts, with a fake client in place
of the studio (the real one is in tests/integration/test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from services.cli import cli
from studio_client.cli.state import State
from studio_client.errors import NotFound
from studio_client.models import (
    Evaluation,
    Page,
    Prediction,
    Predictions,
    Project,
    Run,
    Split,
    Task,
)

BIRDS = Project(id="a" * 32, name="birds", role="owner", created_at="2026-12-01T03:00:00Z")
RUNS = [
    Run(id="r1", project_id=BIRDS.id, split_id="s1", status="completed", epochs_done=2,
        best_epoch=2, best_val_accuracy=0.9, hyperparameters={"model": "smallcnn", "epochs": 2}),
    Run(id="r2", project_id=BIRDS.id, split_id="s1", status="completed", epochs_done=4,
        best_epoch=3, best_val_accuracy=0.95, hyperparameters={"model": "smallcnn", "epochs": 4}),
]  # fmt: skip
METRICS = {
    "images": 10,
    "accuracy": 0.8,
    "per_class": [
        {"label": "br", "precision": 1.0, "recall": 0.6, "f1": 0.75, "support": 5},
        {"label": "tl", "precision": 0.714, "recall": 1.0, "f1": 0.833, "support": 5},
    ],
    "confusion_matrix": {"labels": ["br", "tl"], "matrix": [[3, 2], [0, 5]]},
}


class Fake:
    """The few calls the commands below make, answered from the values above."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.projects = SimpleNamespace(get=self._project, list=self._projects)
        self.splits = SimpleNamespace(list=lambda pid: [Split(id="s1", project_id=pid, name="s")])
        self.runs = SimpleNamespace(compare=lambda ids: RUNS, list=self._runs)
        self.evaluations = SimpleNamespace(create=self._evaluate, wait=lambda i, timeout: self.done)
        self.exports = SimpleNamespace(predict=self._predict)
        self.tasks = SimpleNamespace(list=self._tasks)

    def _project(self, pid: str) -> Project:
        if pid != BIRDS.id:
            raise NotFound("NOT_FOUND", f"project {pid} not found", request_id="rid-9", status=404)
        return BIRDS

    def _projects(self, **params: Any) -> Page[Project]:
        self.calls.append(("projects.list", params))
        return Page[Project](items=[BIRDS], total=1)

    def _runs(self, **params: Any) -> list[Run]:
        self.calls.append(("runs.list", params))
        return RUNS

    def _evaluate(self, run_id: str, **options: Any) -> Evaluation:
        self.done = Evaluation(id="e1", run_id=run_id, status="completed", metrics=METRICS,
                               checkpoint_epoch=2, **options)  # fmt: skip
        return Evaluation(id="e1", run_id=run_id, status="running")

    def _predict(self, export_id: str, images: list[Path], top_k: int) -> Predictions:
        ranked = [Prediction(label="tl", score=0.9), Prediction(label="br", score=0.1)]
        return Predictions(export_id=export_id, predictions=[ranked[:top_k] for _ in images])

    def _tasks(self, **params: Any) -> Page[Task]:
        self.calls.append(("tasks.list", params))
        task = Task(task_id="r1", kind="training", status="processing", progress=0.5)
        return Page[Task](items=[task], total=1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    client = Fake()
    monkeypatch.setattr(State, "client", lambda self: client)
    return client


def studio(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def test_a_project_is_found_by_name_and_runs_listed_as_a_table(fake: Fake) -> None:
    done = studio("runs", "list", "--project", "birds")
    assert done.exit_code == 0, done.output
    assert ("runs.list", {"project_id": BIRDS.id, "status": None, "limit": 50}) in fake.calls
    lines = done.stdout.splitlines()
    assert any(line.split()[:3] == ["r1", "│", "completed"] for line in lines), done.stdout
    assert "95.0%" in done.stdout


def test_compare_shows_only_the_hyperparameters_that_differ(fake: Fake) -> None:
    done = studio("runs", "compare", "r1", "r2")
    header = done.stdout.splitlines()[0]
    assert "epochs" in header and "model" not in header
    assert studio("runs", "compare", "r1").exit_code == 2  # two at least


def test_evaluation_shows_per_class_scores_and_the_confusion_matrix(fake: Fake) -> None:
    done = studio("eval", "r1", "--subset", "val")
    assert done.exit_code == 0, done.output
    assert "accuracy 80.0%" in done.stdout and "val subset" in done.stdout
    assert "0.750" in done.stdout and "confusion matrix" in done.stdout


def test_predictions_as_a_table_and_as_a_document(fake: Fake, tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"png")
    shown = studio("predict", "x1", str(image), "--top-k", "2")
    assert "cat.png" in shown.stdout and "tl 90.0%" in shown.stdout and "br 10.0%" in shown.stdout
    doc = json.loads(studio("predict", "x1", str(image), "--top-k", "1", "--json").stdout)
    assert doc == {
        "export_id": "x1",
        "images": [{"image": str(image), "predictions": [{"label": "tl", "score": 0.9}]}],
    }


def test_tasks_list_passes_its_filters(fake: Fake) -> None:
    done = studio("tasks", "list", "--kind", "training", "--status", "processing")
    assert done.exit_code == 0 and "50%" in done.stdout
    params = {"kind": "training", "status": "processing", "project_id": None, "limit": 50}
    assert ("tasks.list", params) in fake.calls
    assert studio("tasks", "list", "--kind", "party").exit_code == 2


def test_an_unknown_project_id_falls_back_to_names_and_then_says_so(fake: Fake) -> None:
    done = studio("split", "b" * 32, "--json")
    assert done.exit_code == 4 and done.stdout == ""
    assert f"no project '{'b' * 32}'" in done.stderr and "studio projects list" in done.stderr

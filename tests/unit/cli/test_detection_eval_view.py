"""``studio eval`` on a detector's run: COCO mAP and per-class AP and recall, where a
classifier's run shows accuracy and a confusion matrix (tests/unit/cli/test_views.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli import cli
from studio_client.cli.state import State
from studio_client.models import Evaluation

METRICS = {
    "task": "detection", "map": 0.4123, "map50": 0.75, "map75": 0.5, "map_small": None,
    "map_medium": 0.25, "map_large": 0.5, "images": 4, "boxes": 5,
    "per_class": [
        {"label": "disc", "ap": 0.5, "ap50": 0.9, "recall": 0.8, "truths": 5},
        {"label": "square", "ap": None, "ap50": None, "recall": None, "truths": 0},
    ],
    "worst": [{"image_id": "i1", "misses": 1, "false_positives": 2, "truths": [],
               "predictions": []}],
    "predictions": [],
}  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    done = Evaluation(id="e1", run_id="r1", status="completed", metrics=METRICS,
                      checkpoint_epoch=2, checkpoint="best", subset="val")  # fmt: skip

    def create(run_id: str, **options: Any) -> Evaluation:
        return Evaluation(id="e1", run_id=run_id, status="running")

    client = SimpleNamespace(
        evaluations=SimpleNamespace(create=create, wait=lambda i, timeout: done)
    )
    monkeypatch.setattr(State, "client", lambda self: client)


def test_a_detectors_evaluation_shows_map_and_ap_per_class(fake: None) -> None:
    done = CliRunner().invoke(cli, ["eval", "r1", "--subset", "val"], env={"COLUMNS": "200"})

    assert done.exit_code == 0, done.output
    assert "mAP 41.2%, mAP@.5 75.0%" in done.stdout and "accuracy" not in done.stdout
    disc = next(line for line in done.stdout.splitlines() if "disc" in line)
    assert "50.0%" in disc and "90.0%" in disc and "80.0%" in disc
    assert "1 images with misses or false positives listed (3 errors)" in done.stdout

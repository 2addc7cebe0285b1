"""The runs read model of a detection run: each epoch keeps its loss components and its
validation mAP, and the run's best epoch is its best mAP (its accuracy is 0.0)."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import col, select

from contracts import training as c
from services.gateway.readmodels.training import EpochRow, RunRow, TrainingProjector
from services.kernel.sqlite import session
from tests.unit.gateway.fold import folded

RUN = "d" * 32


def epoch(n: int, found: float) -> c.EpochCompleted:
    return c.EpochCompleted(
        run_id=RUN, epoch=n, train_loss=1.0 / n, val_loss=1.0, val_accuracy=0.0,
        learning_rate=0.01, seconds=1.0, images_per_second=5.0,
        losses={"loss_classifier": 0.6 / n, "loss_box_reg": 0.4 / n}, val_map=found,
        val_map50=found * 2,
    )  # fmt: skip


async def test_a_detection_runs_best_epoch_is_its_best_map_and_epochs_keep_their_losses(
    tmp_path: Path,
) -> None:
    queued = c.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(model="fasterrcnn_mobilenet_v3_large_320_fpn"),
        classes=["disc"], train_images=8, val_images=2,
    )  # fmt: skip
    done = c.RunCompleted(run_id=RUN, epochs=3, best_epoch=2, best_val_accuracy=0.0,
                          best_val_map=0.4)  # fmt: skip
    engine = await folded(tmp_path, TrainingProjector(), queued, epoch(1, 0.1), epoch(2, 0.4),
                          epoch(3, 0.3), done)  # fmt: skip
    async with session(engine) as db:
        run = await db.get(RunRow, RUN)
        epochs = (await db.exec(select(EpochRow).order_by(col(EpochRow.epoch)))).all()
        assert run is not None
        public = run.public()
        history = [e.public() for e in epochs]
    await engine.dispose()
    assert (public["best_epoch"], public["best_val_map"], public["best_val_accuracy"]) == (
        2,
        0.4,
        0.0,
    )
    assert history[0]["losses"] == {"loss_classifier": 0.6, "loss_box_reg": 0.4}
    assert [(e["val_map"], e["val_map50"]) for e in history] == [(0.1, 0.2), (0.4, 0.8), (0.3, 0.6)]

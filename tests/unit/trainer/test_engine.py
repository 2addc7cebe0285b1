"""The training engine end to end on a tiny CPU task: learning, determinism, stop and resume,
schedules, early stopping and checkpoints.

The task: 32x32 noise with a bright square top-left (class 0) or bottom-right (class 1);
smallcnn learns it in an epoch or two, so every run here takes a fraction of a second an epoch.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from PIL import Image

from contracts.training import OPTIMIZERS, SCHEDULES, Hyperparameters
from services.trainer.engine import (
    Checkpoint,
    CheckpointError,
    EpochMetrics,
    Sample,
    build_model,
    prune,
    read_checkpoint,
    train,
)

CLASSES = ["top_left", "bottom_right"]
TIMING = ("seconds", "images_per_second")


def squares(folder: Path, per_class: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    samples = []
    for label, i in itertools.product((0, 1), range(per_class)):
        image = Image.new("RGB", (32, 32))
        image.putdata([tuple(rng.randrange(120) for _ in "rgb") for _ in range(32 * 32)])
        x, y = (rng.randrange(1, 5), rng.randrange(1, 5))
        if label == 1:
            x, y = x + 17, y + 17
        image.paste((rng.randrange(200, 256),) * 3, (x, y, x + 10, y + 10))
        path = folder / f"{label}_{i}.png"
        image.save(path)
        samples.append(Sample(path, label))
    return samples


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Sample], list[Sample]]:
    root = tmp_path_factory.mktemp("squares")
    return squares(root / "train", 24, seed=1), squares(root / "val", 8, seed=2)


def hp(**changes: Any) -> Hyperparameters:
    base = Hyperparameters(
        model="smallcnn", epochs=4, batch_size=8, learning_rate=3e-3, image_size=32,
        augmentation="standard", seed=7,
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


@dataclass
class Recorder:
    """Callbacks that record everything and ask to stop once ``stop_after`` (epoch, batch)
    has been reported, or at the ``stop_at_poll``-th poll."""

    stop_after: tuple[int, int] | None = None
    stop_at_poll: int | None = None
    polls: int = 0
    batches: list[tuple[int, int, int, float]] = field(default_factory=list)
    epochs: list[EpochMetrics] = field(default_factory=list)
    saved: list[list[Checkpoint]] = field(default_factory=list)
    stopping: bool = False

    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        self.batches.append((epoch, batch, batches, loss))
        if self.stop_after is not None and (epoch, batch) >= self.stop_after:
            self.stopping = True

    def on_epoch(self, metrics: EpochMetrics, checkpoints: list[Checkpoint]) -> None:
        self.epochs.append(metrics)
        self.saved.append(checkpoints)

    def should_stop(self) -> bool:
        self.polls += 1
        return self.stopping or self.polls == self.stop_at_poll


def run(data: Any, workdir: Path, h: Hyperparameters, **kw: Any) -> tuple[Any, Recorder]:
    stops = {k: kw.pop(k) for k in ("stop_after", "stop_at_poll", "stopping") if k in kw}
    recorder = Recorder(**stops)
    outcome = train(h, CLASSES, data[0], data[1], workdir, "cpu", recorder, **kw)
    return outcome, recorder


def last(workdir: Path) -> Path:
    """The newest epoch file, as the ``last.pt`` link names it."""
    return (workdir / "last.pt").resolve()


def comparable(metrics: list[EpochMetrics]) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(m).items() if k not in TIMING} for m in metrics]


@pytest.mark.parametrize("seed", [0, 1])
def test_smallcnn_learns_the_squares(data: Any, tmp_path: Path, seed: int) -> None:
    outcome, rec = run(data, tmp_path, hp(epochs=8, seed=seed, augmentation="light"))

    assert outcome.status == "completed" and outcome.epochs_done == 8
    assert outcome.best_val_accuracy >= 0.8
    assert rec.epochs[-1].train_loss < rec.epochs[0].train_loss


def test_the_same_seed_gives_identical_metrics(data: Any, tmp_path: Path) -> None:
    _, first = run(data, tmp_path / "a", hp(epochs=3))
    _, second = run(data, tmp_path / "b", hp(epochs=3))
    _, other = run(data, tmp_path / "c", hp(epochs=3, seed=8))

    assert comparable(first.epochs) == comparable(second.epochs)
    assert first.batches == second.batches
    assert comparable(first.epochs) != comparable(other.epochs)


@pytest.mark.parametrize(
    ("schedule", "optimizer", "augmentation"),
    [("cosine", "adamw", "standard"), ("onecycle", "sgd", "light")],
)
def test_a_resumed_run_matches_an_uninterrupted_one(
    data: Any, tmp_path: Path, schedule: str, optimizer: str, augmentation: str
) -> None:
    h = hp(schedule=schedule, optimizer=optimizer, augmentation=augmentation, learning_rate=0.01)
    uninterrupted, whole = run(data, tmp_path / "whole", h)

    stopped, before = run(data, tmp_path / "split", h, stop_after=(3, 2))
    assert (stopped.status, stopped.epochs_done) == ("stopped", 2)
    recorded = before.saved[-1][0]
    assert read_checkpoint(recorded.path)["epoch"] == 2
    resumed, after = run(data, tmp_path / "split", h, resume=recorded.path)

    assert resumed == uninterrupted
    assert comparable(before.epochs + after.epochs) == comparable(whole.epochs)
    assert after.batches == [b for b in whole.batches if b[0] >= 3]


def test_resuming_with_more_epochs_replans_the_cosine_schedule(data: Any, tmp_path: Path) -> None:
    h = hp(epochs=4, learning_rate=0.01)
    run(data, tmp_path, h, stop_after=(3, 1))

    outcome, rec = run(data, tmp_path, hp(epochs=6, learning_rate=0.01), resume=last(tmp_path))

    assert (outcome.status, outcome.epochs_done) == ("completed", 6)
    assert [m.epoch for m in rec.epochs] == [3, 4, 5, 6]
    planned = [0.01 * (1 + math.cos(math.pi * (e - 1) / 6)) / 2 for e in (3, 4, 5, 6)]
    assert [m.learning_rate for m in rec.epochs] == pytest.approx(planned, rel=1e-9)
    assert rec.epochs[0].learning_rate != pytest.approx(0.01 * 0.5)  # the old 4-epoch plan
    assert len(read_checkpoint(tmp_path / "last.pt")["history"]) == 6


def test_resuming_a_finished_run_returns_its_best_at_once(data: Any, tmp_path: Path) -> None:
    done, _ = run(data, tmp_path, hp(epochs=2))

    again, rec = run(data, tmp_path, hp(epochs=2), resume=last(tmp_path))

    assert again == done and again.status == "completed"
    assert rec.epochs == [] and rec.batches == []


def test_resume_needs_a_readable_checkpoint(data: Any, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run(data, tmp_path, hp(), resume=tmp_path / "epoch-0001-0000000000000000.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        run(data, tmp_path, hp(), resume=tmp_path / "bad.pt")


def test_a_stop_before_the_first_batch_saves_nothing(data: Any, tmp_path: Path) -> None:
    outcome, rec = run(data, tmp_path, hp(), stopping=True)

    assert (outcome.status, outcome.epochs_done, outcome.best_epoch) == ("stopped", 0, 0)
    assert rec.batches == [] and not (tmp_path / "last.pt").exists()


def test_a_stop_during_validation_abandons_the_epoch(data: Any, tmp_path: Path) -> None:
    # Epoch 2 polls before each of its 6 training batches, then before each validation batch.
    outcome, rec = run(data, tmp_path, hp(), stop_at_poll=8 + 6 + 2)

    assert (outcome.status, outcome.epochs_done) == ("stopped", 1)
    assert len(rec.batches) == 12 and [m.epoch for m in rec.epochs] == [1]
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1


@pytest.mark.parametrize(("schedule", "optimizer"), list(itertools.product(SCHEDULES, OPTIMIZERS)))
def test_every_schedule_and_optimizer_trains_an_epoch(
    data: Any, tmp_path: Path, schedule: str, optimizer: str
) -> None:
    outcome, rec = run(data, tmp_path, hp(epochs=1, schedule=schedule, optimizer=optimizer))

    assert outcome.status == "completed"
    (metrics,) = rec.epochs
    assert math.isfinite(metrics.train_loss) and math.isfinite(metrics.val_loss)
    assert 0 < metrics.learning_rate <= 3e-3


def test_auto_class_weights_change_the_training_loss(data: Any, tmp_path: Path) -> None:
    train_set, val_set = data
    imbalanced = (train_set[:24] + train_set[24:30], val_set)  # 24 of class 0, 6 of class 1

    _, plain = run(imbalanced, tmp_path / "plain", hp(epochs=1))
    _, weighted = run(imbalanced, tmp_path / "auto", hp(epochs=1, class_weights="auto"))

    assert plain.epochs[0].train_loss != weighted.epochs[0].train_loss


def test_patience_stops_a_run_that_no_longer_improves(data: Any, tmp_path: Path) -> None:
    # One image four times: accuracy is 0 or 1, so it can improve at most once.
    same = [data[1][0]] * 4
    h = hp(epochs=6, learning_rate=1e-6, early_stopping_patience=1)

    outcome, rec = run((data[0], same), tmp_path, h)

    assert outcome.status == "early_stopped"
    assert outcome.epochs_done == outcome.best_epoch + 1 <= 3
    assert len(rec.epochs) == outcome.epochs_done


def test_checkpoints_hold_the_run_and_their_digest(data: Any, tmp_path: Path) -> None:
    outcome, rec = run(data, tmp_path, hp(epochs=2))

    assert [c.kind for c in rec.saved[0]] == ["last", "best"]
    files = [rec.saved[0][0].path.name, rec.saved[1][0].path.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pt", "last.pt", *files])
    for checkpoint in rec.saved[-1]:
        content = checkpoint.path.read_bytes()
        assert checkpoint.sha256 == hashlib.sha256(content).hexdigest()
        assert checkpoint.size == len(content)
    state = read_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= state.keys()
    assert {"python", "torch", "cuda"} == state["rng"].keys()
    assert (state["epoch"], state["best_epoch"]) == (2, outcome.best_epoch)
    assert state["best_val_accuracy"] == outcome.best_val_accuracy
    assert state["history"] == [asdict(m) for m in rec.epochs]
    assert state["hyperparameters"] == msgspec.to_builtins(hp(epochs=2))
    assert state["classes"] == CLASSES
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == outcome.best_epoch


def test_a_checkpoint_serves_as_pretrained_weights(data: Any, tmp_path: Path) -> None:
    run(data, tmp_path, hp(epochs=1))

    model = build_model("smallcnn", 5, tmp_path / "best.pt")

    stored = read_checkpoint(tmp_path / "best.pt")["model"]
    weight = "features.0.weight"
    assert model.state_dict()[weight].equal(stored[weight])


def test_every_batch_is_reported(data: Any, tmp_path: Path) -> None:
    _, rec = run(data, tmp_path, hp(epochs=2))

    assert [b[:3] for b in rec.batches] == [(e, b, 6) for e in (1, 2) for b in range(1, 7)]
    assert all(m.images_per_second > 0 and m.gpu_memory_peak is None for m in rec.epochs)


def test_worker_processes_give_the_same_metrics_as_in_process(data: Any, tmp_path: Path) -> None:
    _, in_process = run(data, tmp_path / "0", hp(epochs=1))
    _, workers = run(data, tmp_path / "1", hp(epochs=1, workers=1))

    assert comparable(workers.epochs) == comparable(in_process.epochs)


def test_every_epoch_writes_a_new_file_and_never_touches_an_older_one(
    data: Any, tmp_path: Path
) -> None:
    # The record of epoch N must keep naming exactly its file while epoch N+1 is being written:
    # a crash before epoch N+1 is stored then resumes from epoch N's file, unharmed.
    _, rec = run(data, tmp_path, hp(epochs=3))

    lasts = [saved[0] for saved in rec.saved]
    assert len({c.path for c in lasts}) == 3
    for epoch, checkpoint in enumerate(lasts, start=1):
        assert checkpoint.path.name == f"epoch-{epoch:04d}-{checkpoint.sha256[:16]}.pt"
        content = checkpoint.path.read_bytes()
        assert hashlib.sha256(content).hexdigest() == checkpoint.sha256
    assert last(tmp_path) == lasts[-1].path
    best = [c for saved in rec.saved for c in saved if c.kind == "best"][-1]
    assert (tmp_path / "best.pt").resolve() == best.path


def test_a_resume_from_an_older_stored_epoch_retrains_the_unstored_one_exactly(
    data: Any, tmp_path: Path
) -> None:
    # Given epoch 3 was written but (the trainer died) never stored: the resume takes epoch 2's
    # file, the last one stored, and trains epochs 3 and 4 to the uninterrupted curves.
    h = hp(epochs=4, learning_rate=0.01)
    _, whole = run(data, tmp_path / "whole", h)
    _, crashed = run(data, tmp_path / "crash", h, stop_after=(4, 1))
    assert len(crashed.saved) == 3
    stored = crashed.saved[1][0]

    resumed, after = run(data, tmp_path / "crash", h, resume=stored.path)

    assert [m.epoch for m in after.epochs] == [3, 4]
    assert comparable(crashed.epochs[:2] + after.epochs) == comparable(whole.epochs)
    assert hashlib.sha256(stored.path.read_bytes()).hexdigest() == stored.sha256
    assert resumed.epochs_done == 4


def test_prune_keeps_the_named_files_and_nothing_else_of_the_epochs(
    data: Any, tmp_path: Path
) -> None:
    _, rec = run(data, tmp_path, hp(epochs=3))
    (tmp_path / "eval-abc.pt").write_bytes(b"an evaluation's private copy")
    keep = {rec.saved[0][0].path.name, rec.saved[2][0].path.name}

    removed = prune(tmp_path, keep)

    assert [p.name for p in removed] == [rec.saved[1][0].path.name]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == keep | {"last.pt", "best.pt", "eval-abc.pt"}

"""One run on two CPU "devices" (gloo, two spawned ranks) against the same run in one process.

The ranks split every global batch (``ShardSampler``) and weigh their losses so that the
averaged gradient is the global batch's; what still differs on a CPU is BatchNorm, whose batch
statistics each rank takes over its own half (torch has no SyncBatchNorm off CUDA). So the loss
curves agree within ``LOSS_TOLERANCE``, and the sharding and loss weights are checked exactly,
without processes. Each launch of two ranks costs seconds (two interpreters importing torch):
the stop and the exact resume run under ``soak``.
"""

from __future__ import annotations

import errno
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from services.trainer.engine import Checkpoint, EpochMetrics, Outcome, read_checkpoint, train
from services.trainer.engine.data import EpochSampler
from services.trainer.engine.ddp import RankFailed, _supervise, train_on
from services.trainer.engine.world import ShardSampler, Strided, World, loss_weight, shares
from services.vision.models import build_model
from tests.unit.trainer.test_engine import CLASSES, Recorder, hp, squares

#: Largest gap allowed between the two runs' training losses of one epoch (BatchNorm, see
#: above; measured gaps 0.02-0.06 with the first epoch near 0.4).
LOSS_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[Any]]:
    root = tmp_path_factory.mktemp("squares")
    return squares(root / "train", 16, seed=1), squares(root / "val", 5, seed=2)


@pytest.mark.parametrize(("images", "batch", "ranks"), [(32, 8, 2), (35, 8, 2), (37, 12, 3)])
def test_the_ranks_shares_are_the_single_process_batches(images: int, batch: int, ranks: int):
    # given one epoch's keys as one process draws them
    keys = list(EpochSampler(images, 7, shuffle=True))
    shards = [ShardSampler(EpochSampler(images, 7, shuffle=True), World(r, ranks), batch)
              for r in range(ranks)]  # fmt: skip
    # then, global batch by global batch, the ranks' shares put together are that batch
    parts = [list(s) for s in shards]
    sizes = shards[0].global_sizes()
    rebuilt, taken = [], [0] * ranks
    for size in sizes:
        for r, share in enumerate(shares(size, ranks)):
            rebuilt += parts[r][taken[r] : taken[r] + share]
            taken[r] += share
    assert rebuilt == keys[: sum(sizes)]
    # a last batch too small to give every rank an image is the only thing left out
    assert len(keys) - sum(sizes) < ranks
    # and every rank has as many batches, so none waits alone in the gradient exchange
    local = batch // ranks
    assert len({-(-len(s) // local) for s in shards}) == 1
    # each image's weight in the averaged gradient (DDP averages the ranks' weighted mean
    # losses) is the one it has in the global batch's mean: 1 / size
    for k, size in enumerate(sizes):
        for s in shards:
            local_n = shares(size, ranks)[s.world.rank]
            assert loss_weight(s, s.world)[k] / ranks / local_n == pytest.approx(1 / size)


def test_validation_shares_cover_every_image_once() -> None:
    shards = [list(Strided(EpochSampler(11, 7, shuffle=False), World(r, 3))) for r in range(3)]
    assert sorted(k for s in shards for k in s) == list(EpochSampler(11, 7, shuffle=False))


def test_two_gloo_ranks_follow_the_single_process_loss_curve(data: Any, tmp_path: Path) -> None:
    # given a run in one process, and the same run (same global batch) on two CPU ranks
    h = hp(epochs=2, batch_size=16, augmentation="none")
    solo, two = Recorder(), Recorder()
    expected = train(h, CLASSES, data[0], data[1], tmp_path / "solo", "cpu", solo)
    outcome = train_on(h, CLASSES, data[0], data[1], tmp_path / "two", ["cpu", "cpu"], two)
    # then both learn alike, epoch by epoch
    assert outcome.status == expected.status == "completed" and outcome.epochs_done == 2
    for one, both in zip(solo.epochs, two.epochs, strict=True):
        assert abs(one.train_loss - both.train_loss) <= LOSS_TOLERANCE, (one, both)
        assert one.learning_rate == both.learning_rate
    assert two.epochs[-1].train_loss < two.epochs[0].train_loss
    assert two.epochs[-1].val_accuracy >= 0.9
    # rank 0 alone reported: each batch once, each epoch once with its new file
    assert [b[:3] for b in two.batches] == [b[:3] for b in solo.batches]
    assert [saved[0].kind for saved in two.saved] == ["last"] * 2
    # and its checkpoint is the bare model's state, which a one-device model loads
    state = read_checkpoint(two.saved[-1][0].path)
    build_model("smallcnn", 2).load_state_dict(state["model"])
    assert outcome.params == expected.params


@pytest.mark.soak
def test_a_stop_ends_every_rank_at_once_and_keeps_the_stored_epochs(
    data: Any, tmp_path: Path
) -> None:
    # given a two-rank run asked to stop during its second epoch
    h = hp(epochs=4, batch_size=8)
    recorder = Recorder(stop_after=(2, 2))
    outcome = train_on(h, CLASSES, data[0], data[1], tmp_path, ["cpu", "cpu"], recorder)
    # then it stopped with the first epoch stored, and no rank is left behind
    assert outcome.status == "stopped" and outcome.epochs_done == 1
    assert len(recorder.epochs) == 1
    assert not list(tmp_path.glob(".ddp-*")), "the ranks' meeting folder is removed"


@pytest.mark.soak
def test_a_resumed_two_rank_run_matches_an_uninterrupted_one(data: Any, tmp_path: Path) -> None:
    # given a two-rank run of three epochs, and one stopped after its second and resumed
    h = hp(epochs=3, batch_size=8)
    whole, first, rest = Recorder(), Recorder(stop_after=(3, 1)), Recorder()
    train_on(h, CLASSES, data[0], data[1], tmp_path / "whole", ["cpu", "cpu"], whole)
    train_on(h, CLASSES, data[0], data[1], tmp_path / "cut", ["cpu", "cpu"], first)
    resume = first.saved[-1][0].path
    train_on(h, CLASSES, data[0], data[1], tmp_path / "cut", ["cpu", "cpu"], rest, resume=resume)
    # then the resumed epoch is the uninterrupted one, to the bit
    drop = ("seconds", "images_per_second")
    same = [{k: v for k, v in vars(m).items() if k not in drop} for m in whole.epochs]
    got = [{k: v for k, v in vars(m).items() if k not in drop} for m in first.epochs + rest.epochs]
    assert got == same


# --- the supervisor, with pipes standing in for the ranks -------------------------------------


class FakeRank:
    """A rank process that is alive until told otherwise."""

    exitcode: int | None = None

    def join(self, timeout: float | None = None) -> None:
        return None


def ranks(count: int) -> tuple[list[Any], list[Any]]:
    """(the supervisor's ends, the ranks' ends) of one pipe per rank."""
    pairs = [multiprocessing.Pipe() for _ in range(count)]
    return [(FakeRank(), ours) for ours, _ in pairs], [theirs for _, theirs in pairs]


def metrics(epoch: int, accuracy: float) -> EpochMetrics:
    return EpochMetrics(epoch, 0.5, 0.4, accuracy, 0.01, 1.0, 10.0, None)


def test_the_supervisor_stores_each_epoch_before_rank_0_goes_on(tmp_path: Path) -> None:
    # given two ranks: rank 0 reports a batch and an epoch, then both are done
    supervised, rank = ranks(2)
    done = Outcome("completed", 1, 1, 0.9)
    best = [Checkpoint(kind, tmp_path / "e1", "0" * 64, 1) for kind in ("last", "best")]
    rank[0].send(("batch", (1, 1, 1, 0.7)))
    rank[0].send(("epoch", (metrics(1, 0.9), best)))
    rank[0].send(("done", done))
    rank[1].send(("done", Outcome("completed", 1, 1, 0.9)))
    recorder = Recorder()
    # when the supervisor carries them
    outcome = _supervise(supervised, recorder, Outcome("stopped", 0, 0, 0.0))
    # then the caller heard the batch and stored the epoch, and rank 0 was told so
    assert outcome == done
    assert recorder.batches == [(1, 1, 1, 0.7)] and [m.epoch for m in recorder.epochs] == [1]
    assert rank[0].recv() == "stored"


def test_a_stop_returns_the_last_stored_epoch_at_once(tmp_path: Path) -> None:
    supervised, rank = ranks(2)
    last = [Checkpoint("last", tmp_path / "e2", "0" * 64, 1)]
    rank[0].send(("epoch", (metrics(2, 0.5), last)))  # epoch 2: not better than epoch 1
    rank[0].send(("batch", (3, 1, 4, 0.3)))
    recorder = Recorder(stop_after=(3, 1))
    # the ranks never say they are done: the stop alone ends the supervision
    outcome = _supervise(supervised, recorder, Outcome("stopped", 1, 1, 0.8))
    assert outcome == Outcome("stopped", 2, 1, 0.8)


def test_a_rank_error_is_raised_and_a_dead_rank_fails_the_run() -> None:
    supervised, rank = ranks(2)
    full = OSError(errno.ENOSPC, "No space left on device")
    rank[1].send(("error", [RuntimeError("PytorchStreamWriter failed writing file"), full]))
    with pytest.raises(RuntimeError, match="PytorchStreamWriter") as raised:
        _supervise(supervised, Recorder(), Outcome("stopped", 0, 0, 0.0))
    assert isinstance(raised.value.__cause__, OSError)  # what failed underneath: a full disk
    assert raised.value.__cause__.errno == errno.ENOSPC
    supervised, rank = ranks(2)
    rank[1].close()  # died without a word
    with pytest.raises(RankFailed, match="rank 1"):
        _supervise(supervised, Recorder(), Outcome("stopped", 0, 0, 0.0))


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid`` that are spawned ranks."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.soak
def test_the_ranks_end_when_their_trainer_is_killed(tmp_path: Path) -> None:
    # given a long two-rank run in a process of its own, training
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER_SCRIPT.format(root=Path(__file__).parents[3], work=tmp_path))
    trainer = subprocess.Popen([sys.executable, str(script)])
    try:
        ranks = wait_for(lambda: len(found := children(trainer.pid)) == 2 and found, 120)
        wait_for(lambda: list((tmp_path / "w").glob("epoch-*.pt")), 120)
        # when the trainer is killed, so that nothing terminates its ranks
        trainer.kill()
        trainer.wait()
        # then the ranks notice and end by themselves
        wait_for(lambda: not any(alive(pid) for pid in ranks), 30)
    finally:
        if trainer.poll() is None:
            trainer.kill()


TRAINER_SCRIPT = """
import sys
sys.path.insert(0, "{root}")
from pathlib import Path
from tests.unit.trainer.test_engine import CLASSES, Recorder, hp, squares
from services.trainer.engine.ddp import train_on

if __name__ == "__main__":
    root = Path("{work}")
    train, val = squares(root / "train", 8, seed=1), squares(root / "val", 2, seed=2)
    h = hp(epochs=1000, batch_size=8)
    train_on(h, CLASSES, train, val, root / "w", ["cpu", "cpu"], Recorder())
"""


def wait_for(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)
    return value

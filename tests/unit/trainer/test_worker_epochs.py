"""The trainer's side of an epoch boundary, on an in-memory store and Object Store: files before
facts, an epoch the store refuses fails loudly, and a resume takes exactly the recorded file."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import ObjectNotFoundError

from contracts import training as c
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import checkpoints, domain, engine
from services.trainer.checkpoints import CheckpointFiles, CheckpointUnavailable
from services.trainer.epochs import EpochNotStored, Epochs
from services.trainer.runstore import RunStore

RUN = "r" * 32
ME = "trainer-a"


class Info:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeObjects:
    """The few Object Store calls the trainer makes, on a dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []

    async def put(self, name: str, file: io.BufferedReader) -> None:
        self.calls.append(("put", name))
        self.data[name] = file.read()

    async def get(self, name: str, writeinto: Any) -> None:
        if name not in self.data:
            raise ObjectNotFoundError
        writeinto.write(self.data[name])

    async def delete(self, name: str) -> None:
        self.calls.append(("delete", name))
        if self.data.pop(name, None) is None:
            raise ObjectNotFoundError

    async def list(self, ignore_deletes: bool = False) -> list[Info]:
        return [Info(name) for name in self.data]


def metrics(epoch: int) -> engine.EpochMetrics:
    return engine.EpochMetrics(epoch, 1.0, 1.0, 0.5, 0.1, 1.0, 10.0, None)


def epoch_file(workdir: Path, epoch: int, content: bytes) -> engine.Checkpoint:
    sha = hashlib.sha256(content).hexdigest()
    path = workdir / f"epoch-{epoch:04d}-{sha[:16]}.pt"
    path.write_bytes(content)
    return engine.Checkpoint("last", path, sha, len(content))


@pytest.fixture
def trainer(tmp_path: Path) -> Epochs:
    """The epochs of runs this trainer (``ME``) stores, on an in-memory store."""
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    runs = RunStore(Repository(store, domain.evolve, None), instance=ME)
    return Epochs(runs, CheckpointFiles(FakeObjects(), tmp_path))  # type: ignore[arg-type]


async def running(trainer: Epochs, epochs: int = 3, traceparent: str = "") -> domain.Run:
    queued = c.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(epochs=epochs), classes=["a", "b"],
        train_images=10, val_images=4,
    )  # fmt: skip
    started = c.RunStarted(
        run_id=RUN, instance=ME, device="cpu", lease="slot", attempt=1, start_epoch=1
    )
    trace = {"traceparent": traceparent} if traceparent else None
    await trainer.runs.repo.store.append(RUN, [queued, started], 0, headers=trace)
    run, _ = await trainer.runs.repo.get(RUN)
    assert run is not None
    return run


async def stored(trainer: Epochs) -> list[c.Event]:
    return [s.event for s in await trainer.runs.repo.store.load(RUN)]


async def test_an_epoch_is_uploaded_before_it_is_stored_and_old_files_pruned_after(
    trainer: Epochs, tmp_path: Path
) -> None:
    run = await running(trainer)
    workdir = tmp_path / RUN
    workdir.mkdir()
    objects: FakeObjects = trainer.files.objects  # type: ignore[assignment]
    kept: dict[str, c.CheckpointSaved] = {}
    first = epoch_file(workdir, 1, b"epoch one")
    await trainer.store(run, metrics(1), [first, engine.Checkpoint("best", *_rest(first))], kept)
    second = epoch_file(workdir, 2, b"epoch two")
    orphan = workdir / "epoch-0003-00000000000000aa.pt"  # a crash's file, never stored
    orphan.write_bytes(b"x")

    await trainer.store(run, metrics(2), [second], kept)

    events = await stored(trainer)
    records = [e for e in events if isinstance(e, c.CheckpointSaved)]
    assert [(r.epoch, r.kind) for r in records] == [(1, "last"), (1, "best"), (2, "last")]
    assert records[-1].object_name == checkpoints.object_name(RUN, second.path)
    assert records[-1].sha256 == second.sha256
    # the file went up once per epoch, before its record; nothing the records need was removed
    assert [call for call in objects.calls if call[0] == "put"] == [
        ("put", checkpoints.object_name(RUN, first.path)),
        ("put", checkpoints.object_name(RUN, second.path)),
    ]
    assert first.path.exists() and second.path.exists() and not orphan.exists()
    assert set(objects.data) == {r.object_name for r in records}


async def test_an_epoch_the_store_refuses_raises_and_prunes_nothing(
    trainer: Epochs, tmp_path: Path
) -> None:
    # Given a trainer one epoch ahead of the stored history (epoch 1 never stored)
    run = await running(trainer)
    workdir = tmp_path / RUN
    workdir.mkdir()
    ahead = epoch_file(workdir, 2, b"epoch two")
    stale = epoch_file(workdir, 1, b"epoch one, unstored")

    with pytest.raises(EpochNotStored, match="epoch 2 follows epoch 0"):
        await trainer.store(run, metrics(2), [ahead], {})

    assert not any(isinstance(e, c.EpochCompleted) for e in await stored(trainer))
    assert ahead.path.exists() and stale.path.exists()


async def test_a_failure_is_stored_with_the_reason(trainer: Epochs) -> None:
    run = await running(trainer)

    await trainer.runs.fail(
        run.run_id, EpochNotStored("epoch 2 was not stored: epoch 2 follows epoch 0")
    )

    [failed] = [e for e in await stored(trainer) if isinstance(e, c.RunFailed)]
    assert failed.code == "EPOCH_NOT_STORED" and "follows epoch 0" in failed.message
    state, _ = await trainer.runs.repo.get(RUN)
    assert state is not None and state.status == domain.FAILED


def record(path: Path, epoch: int, content: bytes) -> c.CheckpointSaved:
    return c.CheckpointSaved(
        run_id=RUN, epoch=epoch, kind="last", sha256=hashlib.sha256(content).hexdigest(),
        size=len(content), object_name=checkpoints.object_name(RUN, path),
    )  # fmt: skip


async def test_a_resume_takes_the_local_file_only_when_it_matches_its_record(
    tmp_path: Path,
) -> None:
    objects = FakeObjects()
    good = b"the stored epoch"
    saved = record(tmp_path / "epoch-0002-aaaaaaaaaaaaaaaa.pt", 2, good)
    objects.data[saved.object_name] = good

    # missing here: fetched from the Object Store and kept in its place
    path = await checkpoints.fetch(objects, saved, tmp_path)  # type: ignore[arg-type]
    assert path.read_bytes() == good
    # damaged here: fetched again, the damaged file replaced
    path.write_bytes(b"overwritten by an epoch that was never stored")
    assert (await checkpoints.fetch(objects, saved, tmp_path)).read_bytes() == good  # type: ignore[arg-type]
    # a private copy for a reader, which pruning the folder does not take away
    copy = await checkpoints.fetch(objects, saved, tmp_path, tmp_path / "eval-1.pt")  # type: ignore[arg-type]
    engine.prune(tmp_path, set())
    assert copy.read_bytes() == good


async def test_a_resume_refuses_a_checkpoint_that_is_gone_or_not_the_recorded_one(
    tmp_path: Path,
) -> None:
    objects = FakeObjects()
    saved = record(tmp_path / "epoch-0002-aaaaaaaaaaaaaaaa.pt", 2, b"the stored epoch")

    with pytest.raises(CheckpointUnavailable) as gone:
        await checkpoints.fetch(objects, saved, tmp_path)  # type: ignore[arg-type]
    objects.data[saved.object_name] = b"something else"
    with pytest.raises(CheckpointUnavailable) as corrupt:
        await checkpoints.fetch(objects, saved, tmp_path)  # type: ignore[arg-type]

    assert (gone.value.code, corrupt.value.code) == ("CHECKPOINT_MISSING", "CORRUPT_CHECKPOINT")
    assert list(tmp_path.iterdir()) == []


def _rest(checkpoint: engine.Checkpoint) -> tuple[Path, str, int]:
    return checkpoint.path, checkpoint.sha256, checkpoint.size


async def test_what_the_trainer_stores_follows_the_trace_the_run_was_queued_in(
    trainer: Epochs, tmp_path: Path
) -> None:
    # given a run queued by a client's request (its first event carries the request's trace)
    trace_id = "5" * 31 + "a"
    queued = await running(trainer, traceparent=f"00-{trace_id}-{'6' * 16}-01")
    workdir = tmp_path / RUN
    workdir.mkdir()
    # when the trainer stores an epoch and the run's end
    last = epoch_file(workdir, 1, b"epoch one")
    await trainer.store(queued, metrics(1), [last], {})
    await trainer.runs.fail(queued.run_id, EpochNotStored("a reason"))
    # then each of its events belongs to the client's trace, as a child span
    loaded = await trainer.runs.repo.store.load(RUN)
    mine = [s.headers["traceparent"].split("-")[1] for s in loaded[2:]]
    assert len(mine) == 3 and set(mine) == {trace_id}  # epoch, its checkpoint, the failure

"""A NATS outage at the trainer: Object Store calls wait for NATS to come back, and the
worker's loop outlives a step that failed past its retries."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from contracts import training as c
from services.trainer import checkpoints, worker
from services.trainer.worker import Worker

RUN = "r" * 32


class FlakyObjects:
    """An Object Store that times out ``failures`` times before each call succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures, self.data = failures, {}  # type: dict[str, bytes]
        self.tries = 0

    def _flake(self) -> None:
        self.tries += 1
        if self.failures:
            self.failures -= 1
            raise NatsTimeoutError

    async def put(self, name: str, file: io.BufferedReader) -> None:
        self._flake()
        self.data[name] = file.read()

    async def get(self, name: str, writeinto: Any) -> None:
        if self.failures:
            writeinto.write(b"partial")  # a try that fails half-way must not leave its bytes
        self._flake()
        writeinto.write(self.data[name])


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.kernel.transient.FIRST_DELAY_S", 0.001)


async def test_an_upload_and_a_fetch_wait_out_timeouts_and_store_whole_files(tmp_path: Path):
    # given a checkpoint file and an Object Store that times out twice on every call
    path = tmp_path / "epoch-0001-abc.pt"
    path.write_bytes(b"weights")
    objects = FlakyObjects(failures=2)
    # when it is uploaded, then fetched back into another work directory
    await checkpoints.upload(objects, RUN, [path])  # type: ignore[arg-type]
    objects.failures = 2
    record = c.CheckpointSaved(
        run_id=RUN, epoch=1, kind="last", sha256=hashlib.sha256(b"weights").hexdigest(),
        size=7, object_name=f"runs/{RUN}/{path.name}",
    )  # fmt: skip
    other = tmp_path / "elsewhere"
    fetched = await checkpoints.fetch(objects, record, other)  # type: ignore[arg-type]
    # then both succeeded, whole: the stored object and the fetched file are the bytes
    assert objects.data[f"runs/{RUN}/{path.name}"] == b"weights"
    assert fetched.read_bytes() == b"weights"
    assert objects.tries == 6


async def test_an_outage_longer_than_the_retries_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(checkpoints, "OBJECT_RETRY_S", 0.01)
    path = tmp_path / "f.pt"
    path.write_bytes(b"x")
    with pytest.raises(NatsTimeoutError):
        await checkpoints.upload(FlakyObjects(failures=10**6), RUN, [path])  # type: ignore[arg-type]


async def test_the_worker_loop_outlives_a_failing_step(monkeypatch: pytest.MonkeyPatch):
    # given a worker whose next step fails twice (say, a lease call past its retries)
    monkeypatch.setattr(worker, "RETRY_S", 0.001)
    w = Worker.__new__(Worker)
    calls: list[str] = []
    took = asyncio.Event()

    async def interrupt_mine(reason: str) -> None:
        calls.append("interrupt_mine")

    async def reap_forever() -> None:
        await asyncio.Event().wait()

    async def next_run() -> bool:
        calls.append("next")
        if calls.count("next") <= 2:
            raise NatsTimeoutError
        took.set()
        await asyncio.Event().wait()  # training, until cancelled
        return True

    w.reaper = SimpleNamespace(interrupt_mine=interrupt_mine, forever=reap_forever)  # type: ignore[assignment]
    monkeypatch.setattr(w, "_next", next_run, raising=False)
    # when it serves
    task = asyncio.create_task(w.serve())
    await asyncio.wait_for(took.wait(), 5)
    task.cancel()
    # then it kept looking for runs after each failure
    assert calls[:4] == ["interrupt_mine", "next", "next", "next"]

"""Training survives its faults: a trainer killed at every step of an epoch's boundary or in the
middle of an epoch, NATS restarted, two trainers.

The boundary faults use the trainer's fault-injection hook (``STUDIO_FAULT_POINT``, see
``services/trainer/engine/faults.py``): the trainer SIGKILLs itself at an exact step, after the
epoch's training pass, its checkpoint write, its upload or its append. A trainer started again
resumes the run by itself, and the run must end as if nothing had happened: the curves of an
uninterrupted run, each planned epoch stored once, and checkpoints matching their records.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from contracts import training as c
from services.trainer.engine.faults import POINTS
from tests.conftest import PATIENT_S
from tests.stack import Stack
from tests.training_helpers import (
    API,
    client,
    curves,
    learnable_split,
    run,
    run_events,
    submit,
    wait,
    wait_status,
)

pytestmark = pytest.mark.integration

#: Slow enough per epoch (about a second here) that a test can act in the middle of one.
SLOW = {"epochs": 5, "image_size": 48, "seed": 3}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One studio for the module (a studio start costs seconds of CPU): each test leaves it
    whole, with its one trainer running, for the next."""
    s = Stack(
        tmp_path_factory.mktemp("faults"),
        ("projects", "datasets", "trainer"),
        STUDIO_LEASE_TTL="2",
        STUDIO_TRAINER_SLOT="slot-a",
    )
    try:
        yield s.up(PATIENT_S)
    finally:
        s.down()


@pytest.fixture(scope="module")
def busy(stack: Stack) -> tuple[str, str]:
    """A split big enough that a ``SLOW`` run is still training when a test acts."""
    return learnable_split(stack, per_class=80)


def test_nats_restarted_mid_run_training_goes_on_and_no_event_is_lost(stack, busy):
    project_id, split_id = busy
    queued = submit(stack, project_id, split_id, hyperparameters=SLOW).json()["data"]
    wait(lambda: len(run(stack, queued["id"])["history"]) >= 1, every=0.02)
    port = stack.nats.port
    stack.nats.stop()
    stack.start_nats(port)
    stack.wait_healthy()
    done = wait_status(stack, queued["id"], "completed", "interrupted", "failed")
    assert done["status"] == "completed", done
    assert [e["epoch"] for e in done["history"]] == [1, 2, 3, 4, 5]


def test_two_trainers_run_two_runs_at_once_and_never_more(stack, busy):
    env = {"STUDIO_TRAINER_SLOT": "slot-2", "STUDIO_INSTANCE": "t2", "STUDIO_LOG_LEVEL": "INFO"}
    stack.start("trainer-2", module="trainer", **env)
    try:
        _two_trainers(stack, *busy)
    finally:  # the module's next tests count on one trainer
        stack.stop("trainer-2")


def _two_trainers(stack: Stack, project_id: str, split_id: str) -> None:
    wait(lambda: "trainer is running" in stack.log("trainer-2"), timeout=PATIENT_S)
    # Two epochs: long enough (about a second each) that the two runs are seen at once.
    hyper = SLOW | {"epochs": 2}
    ids = [
        submit(stack, project_id, split_id, hyperparameters=hyper).json()["data"]["id"]
        for _ in range(3)
    ]
    most, stop = [0], threading.Event()

    def watch() -> None:
        with client(stack) as api:
            while not stop.is_set():
                running = api.get(f"{API}/training/queue").json()["data"]["running"]
                most[0] = max(most[0], len(running))
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for run_id in ids:
            wait_status(stack, run_id, "completed")
    finally:
        stop.set()
        watcher.join()
    assert most[0] == 2
    instances = {run(stack, run_id)["instance"] for run_id in ids}
    assert instances == {"test", "t2"}


# --- a crash at each step of an epoch's boundary ---------------------------------------------

#: Four epochs of the small CNN on 32 px squares: about a second an epoch here.
BOUNDARY = {"epochs": 4, "seed": 5}
FAULT_EPOCH = 2


@pytest.fixture(scope="module")
def boundary(stack: Stack) -> tuple[Stack, str, str, Any]:
    """The module's studio, a split, and the curves of an uninterrupted run."""
    project_id, split_id = learnable_split(stack, per_class=24)
    reference = submit(stack, project_id, split_id, hyperparameters=BOUNDARY).json()["data"]
    return stack, project_id, split_id, curves(wait_status(stack, reference["id"], "completed"))


def test_a_crash_at_every_step_of_an_epoch_boundary_resumes_by_itself_to_the_same_curves(
    boundary,
):
    stack, project_id, split_id, reference = boundary
    # given one trainer per fault point, each dying (SIGKILL) at its step of epoch 2 of the one
    # run it claims (it never finishes a run, so it never claims a second)
    stack.stop("trainer")
    doomed = {}
    for i, point in enumerate(POINTS):
        name = f"fault-{i}"
        env = {"STUDIO_INSTANCE": name, "STUDIO_TRAINER_SLOT": f"slot-{name}"}
        stack.start(name, module="trainer", STUDIO_FAULT_POINT=f"{point}:{FAULT_EPOCH}", **env)
        doomed[name] = point
    stack.wait_healthy(timeout=PATIENT_S)
    victims = [
        submit(stack, project_id, split_id, hyperparameters=BOUNDARY).json()["data"]["id"]
        for _ in POINTS
    ]
    wait(lambda: all(stack.procs[name].poll() is not None for name in doomed), timeout=180)
    for name in doomed:
        assert stack.procs[name].returncode == -signal.SIGKILL, stack.log(name)[-2000:]
        stack.kill(name)
    # when a trainer without faults comes up, and nobody touches the runs
    stack.start("trainer")
    seen: dict[str, list[str]] = {run_id: [] for run_id in victims}
    wait(lambda: all(_ended(stack, run_id, seen[run_id]) for run_id in victims), timeout=240)
    # then each run resumed by itself and ended as if nothing had happened
    crashed_at = set()
    for run_id in victims:
        done = run(stack, run_id)
        assert done["status"] == "completed", (done, seen[run_id])
        assert "failed" not in seen[run_id] and done["attempt"] == 2 and done["message"] is None
        assert curves(done) == reference
        events = asyncio.run(run_events(stack, run_id))
        assert [e.epoch for e in events if isinstance(e, c.EpochCompleted)] == [1, 2, 3, 4]
        [resumed] = [e for e in events if isinstance(e, c.RunResumed)]
        assert resumed.automatic and any(isinstance(e, c.RunInterrupted) for e in events)
        first = next(e for e in events if isinstance(e, c.RunStarted))
        crashed_at.add(doomed[first.instance])
        _assert_checkpoints_match_their_records(stack, run_id, events)
    assert crashed_at == set(POINTS)


def test_without_auto_resume_a_run_killed_mid_training_waits_interrupted_then_resumes_exactly(
    boundary,
):
    stack, project_id, split_id, reference = boundary
    # given a run on the module's trainer (auto-resume is the trainer's that takes over: the one
    # killed never has its say)
    victim = submit(stack, project_id, split_id, hyperparameters=BOUNDARY).json()["data"]
    wait(lambda: len(run(stack, victim["id"])["history"]) >= 2, every=0.02)
    # when the trainer dies without a word, wherever it is in its third epoch
    stack.kill("trainer")
    # then the trainer that takes over marks the run interrupted, and (STUDIO_AUTO_RESUME=0)
    # leaves it so until a person resumes it
    stack.start("trainer", STUDIO_AUTO_RESUME="0")
    interrupted = wait_status(stack, victim["id"], "interrupted", timeout=PATIENT_S)
    assert "lease" in interrupted["message"] or "restarted" in interrupted["message"]
    with client(stack) as api:
        assert api.post(f"{API}/training/runs/{victim['id']}/resume").status_code == 202
    # and the resume continues from the last stored epoch to the same curves, no epoch twice
    done = wait_status(stack, victim["id"], "completed")
    assert curves(done) == reference
    events = asyncio.run(run_events(stack, victim["id"]))
    assert [e.epoch for e in events if isinstance(e, c.EpochCompleted)] == [1, 2, 3, 4]
    assert not any(isinstance(e, c.RunResumed) and e.automatic for e in events)
    # and an evaluation reads the best checkpoint its record names, from the Object Store once
    # this machine's copy is gone
    best = [e for e in events if isinstance(e, c.CheckpointSaved) and e.kind == "best"][-1]
    wait(lambda: _tidied(stack, victim["id"], events), timeout=30, every=0.2)
    (stack.workspace / "artifacts" / victim["id"] / Path(best.object_name).name).unlink()
    with client(stack) as api:
        body = {"run_id": victim["id"], "checkpoint": "best", "subset": "val"}
        started = api.post(f"{API}/evaluation/run", json=body).json()["data"]
        evaluation = wait(
            lambda: (
                (e := api.get(f"{API}/evaluation/{started['id']}").json()["data"])["status"]
                in ("completed", "failed")
                and e
            )
        )
    assert evaluation["status"] == "completed", evaluation
    assert evaluation["checkpoint_epoch"] == best.epoch


def _ended(stack: Stack, run_id: str, seen: list[str]) -> bool:
    status = run(stack, run_id)["status"]
    if not seen or seen[-1] != status:
        seen.append(status)
    return status in ("completed", "failed", "stopped")


def _assert_checkpoints_match_their_records(
    stack: Stack, run_id: str, events: list[c.Event]
) -> None:
    """The last and best records name files whose sha256 they hold, here and in the Object
    Store; every other file of the run is gone once the run has tidied up."""
    records = {e.kind: e for e in events if isinstance(e, c.CheckpointSaved)}
    assert records["last"].epoch == 4
    workdir = stack.workspace / "artifacts" / run_id

    wait(lambda: _tidied(stack, run_id, events), timeout=30, every=0.2)
    stored = asyncio.run(_objects(stack, run_id, data=True))
    for record in records.values():
        local = (workdir / Path(record.object_name).name).read_bytes()
        assert hashlib.sha256(local).hexdigest() == record.sha256
        assert hashlib.sha256(stored[record.object_name]).hexdigest() == record.sha256
        assert len(local) == record.size


def _tidied(stack: Stack, run_id: str, events: list[c.Event]) -> bool:
    """Only the files of the run's last and best records are left, here and in the store."""
    names = _kept(events)
    local = {p.name for p in (stack.workspace / "artifacts" / run_id).glob("epoch-*.pt")}
    if local != {Path(n).name for n in names}:
        return False
    return set(asyncio.run(_objects(stack, run_id))) == names


def _kept(events: list[c.Event]) -> set[str]:
    records = {e.kind: e for e in events if isinstance(e, c.CheckpointSaved)}
    return {r.object_name for r in records.values()}


async def _objects(stack: Stack, run_id: str, data: bool = False) -> dict[str, bytes | None]:
    nc = await nats.connect(stack.nats_url)
    try:
        objects = await nc.jetstream().object_store(c.ARTIFACTS_BUCKET)
        infos = await objects.list(ignore_deletes=True)
        names = [i.name for i in infos if i.name and i.name.startswith(c.run_objects(run_id))]
        if not data:
            return dict.fromkeys(names)
        return {n: (await objects.get(n)).data for n in names}
    finally:
        await nc.close()

"""Training survives its faults: a trainer killed mid-epoch, NATS restarted, two trainers."""

from __future__ import annotations

import threading
import time

import pytest

from tests.stack import Stack
from tests.training_helpers import (
    API,
    client,
    curves,
    learnable_split,
    run,
    submit,
    wait,
    wait_status,
)

pytestmark = pytest.mark.integration

#: Slow enough per epoch (about a second here) that a test can act in the middle of one.
SLOW = {"epochs": 5, "image_size": 48, "seed": 3}


@pytest.fixture
def stack(tmp_path) -> Stack:
    s = Stack(
        tmp_path,
        ("projects", "datasets", "trainer"),
        STUDIO_LEASE_TTL="2",
        STUDIO_TRAINER_SLOT="slot-a",
    )
    try:
        yield s.up()
    finally:
        s.down()


def test_a_trainer_killed_mid_epoch_leaves_an_interrupted_run_that_resumes_exactly(stack):
    project_id, split_id = learnable_split(stack, per_class=80)
    reference = submit(stack, project_id, split_id, hyperparameters=SLOW).json()["data"]
    whole = wait_status(stack, reference["id"], "completed")
    victim = submit(stack, project_id, split_id, hyperparameters=SLOW).json()["data"]
    wait(lambda: len(run(stack, victim["id"])["history"]) >= 2, every=0.02)
    # when the trainer dies without a word, in the middle of an epoch
    stack.kill("trainer")
    # then its lease expires and the run is marked interrupted, not left running
    stack.start("trainer", STUDIO_TRAINER_SLOT="slot-b")
    interrupted = wait_status(stack, victim["id"], "interrupted", timeout=60)
    assert "lease" in interrupted["message"] or "restarted" in interrupted["message"]
    # and a resume continues from the last checkpoint to the same curves, no epoch twice
    with client(stack) as api:
        assert api.post(f"{API}/training/runs/{victim['id']}/resume").status_code == 202
    done = wait_status(stack, victim["id"], "completed")
    assert [e["epoch"] for e in done["history"]] == [1, 2, 3, 4, 5]
    assert curves(done) == curves(whole)


def test_nats_restarted_mid_run_training_goes_on_and_no_event_is_lost(stack):
    project_id, split_id = learnable_split(stack, per_class=80)
    queued = submit(stack, project_id, split_id, hyperparameters=SLOW).json()["data"]
    wait(lambda: len(run(stack, queued["id"])["history"]) >= 1, every=0.02)
    port = stack.nats.port
    stack.nats.stop()
    stack.start_nats(port)
    stack.wait_healthy()
    done = wait_status(stack, queued["id"], "completed", "interrupted", "failed")
    assert done["status"] == "completed", done
    assert [e["epoch"] for e in done["history"]] == [1, 2, 3, 4, 5]


def test_two_trainers_run_two_runs_at_once_and_never_more(stack):
    env = {"STUDIO_TRAINER_SLOT": "slot-2", "STUDIO_INSTANCE": "t2", "STUDIO_LOG_LEVEL": "INFO"}
    stack.start("trainer-2", module="trainer", **env)
    project_id, split_id = learnable_split(stack, per_class=80)
    wait(lambda: "trainer is running" in stack.log("trainer-2"), timeout=60)
    hyper = SLOW | {"epochs": 6}
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

"""A trainer stopped gracefully (SIGTERM: ``studio down``, systemd, ``docker stop``) while it
trains: it stops at the next batch, hands the run back to the queue from its last stored epoch
(interrupted and queued again in one append, by itself: no reaper pass, no lease TTL) and
releases its device lease before it exits, within a few seconds and with status 0; another
trainer then ends the run exactly as an uninterrupted run ends: the same curves, each epoch
stored once.

Real processes. In ``make test`` the shared studio's trainer is the other one: of two identical
runs, each trainer takes one, and the one on this test's own trainer is the victim; the other is
the reference, after which the studio's trainer takes the victim over. Under soak, on a studio
of its own, the other trainer is idle, so the takeover itself is timed. Imports the stack helpers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from contracts import training as c
from services.kernel.lease import Leases
from services.trainer.worker import LEFT
from tests.reliability import figures
from tests.stack import STOP_GRACE_S, Stack
from tests.training_helpers import (
    FAST,
    curves,
    learnable_split,
    run,
    run_events,
    submit,
    wait,
    wait_status,
)

pytestmark = pytest.mark.integration

STACK_SERVICES = ("projects", "datasets", "trainer")
#: Three epochs of the small CNN: the run is handed back in its second or third.
HYPER = FAST | {"epochs": 3}


def test_a_trainer_stopped_mid_epoch_hands_its_run_back_and_exits_promptly(stack: Stack):
    # given a trainer of this test's own beside the studio's, each training one of two runs
    mine = start_trainer(stack, "sigterm-a")
    try:
        project_id, split_id = learnable_split(stack, per_class=24)
        wait(lambda: "trainer is running" in stack.log(mine), timeout=90)
        ids = []
        for _ in range(2):  # the second is claimed by whichever trainer the first left free
            ids.append(submit(stack, project_id, split_id, hyperparameters=HYPER).json()["data"])
            wait(lambda: run(stack, ids[-1]["id"])["status"] == "running", every=0.02)
        [victim] = [r["id"] for r in ids if run(stack, r["id"])["instance"] == mine]
        [reference] = [r["id"] for r in ids if r["id"] != victim]
        # when this test's trainer is stopped (SIGTERM) past the victim's first epoch, and then
        # the victim ends on the studio's trainer once it is free
        events = sigterm_mid_run(stack, mine, victim)
        # then it ends as the reference run does, which never stopped
        assert curves(run(stack, victim)) == curves(wait_status(stack, reference, "completed"))
        figures.record(
            "trainer stopped (SIGTERM) mid-run",
            events_appended=len(events),
            events_lost=0,
            duplicates_applied=0,
            lease_overlaps=0,
            kills=0,
        )
    finally:
        if mine in stack.procs:
            stack.stop(mine)


@pytest.mark.soak
def test_soak_another_trainer_takes_a_stopped_trainers_run_over_at_once(tmp_path: Path):
    # given a studio of two trainers of its own and a run on one of them, the other idle
    studio = Stack(tmp_path, ("projects", "datasets"))
    try:
        studio.up(timeout=150)  # as patient as the shared studios (a loaded machine)
        trainers = [start_trainer(studio, name) for name in ("sigterm-a", "sigterm-b")]
        project_id, split_id = learnable_split(studio, per_class=60)
        wait(lambda: all("trainer is running" in studio.log(n) for n in trainers), timeout=150)
        hyper = HYPER | {"epochs": 6}
        victim = submit(studio, project_id, split_id, hyperparameters=hyper).json()["data"]["id"]
        wait(lambda: run(studio, victim)["status"] == "running", every=0.02)
        doomed = run(studio, victim)["instance"]
        # when that trainer is stopped past the run's first epoch
        events = sigterm_mid_run(studio, doomed, victim, epochs=6)
        # then the idle one took the run over at once and ended it as an uninterrupted run
        reference = submit(studio, project_id, split_id, hyperparameters=hyper).json()["data"]
        assert curves(run(studio, victim)) == curves(
            wait_status(studio, reference["id"], "completed")
        )
        figures.record(
            "trainer stopped (SIGTERM) mid-run, soak",
            events_appended=len(events),
            events_lost=0,
            duplicates_applied=0,
            lease_overlaps=0,
            worst_takeover_s=round(_takeover_s(events), 2),
            kills=0,
        )
    finally:
        studio.down()


def start_trainer(stack: Stack, name: str) -> str:
    env = {"STUDIO_INSTANCE": name, "STUDIO_TRAINER_SLOT": name, "STUDIO_LOG_LEVEL": "INFO"}
    stack.start(name, module="trainer", **env)
    return name


def sigterm_mid_run(stack: Stack, doomed: str, victim: str, epochs: int = 3) -> list[c.Event]:
    """SIGTERM to ``doomed`` once ``victim`` (training there) stored its first epoch; checks the
    stop and the hand-back, waits for the run to end elsewhere and returns its events."""
    wait(lambda: len(run(stack, victim)["history"]) >= 1, every=0.02)
    asked = time.monotonic()
    stack.procs[doomed].send_signal(signal.SIGTERM)
    exited = stack.procs[doomed].wait(STOP_GRACE_S)
    stopping_s = time.monotonic() - asked
    # it exited by itself, promptly, having handed the run back and freed its device
    assert exited == 0, stack.log(doomed)[-3000:]
    stack.procs.pop(doomed)
    handed = asyncio.run(run_events(stack, victim))
    interrupted = [e for e in handed if isinstance(e, c.RunInterrupted)]
    assert [e.reason for e in interrupted] == [LEFT], handed
    back = handed[handed.index(interrupted[0]) + 1]  # in the same append: queued again
    assert isinstance(back, c.RunResumed) and back.automatic, handed
    assert doomed not in asyncio.run(_holders(stack)), "its lease outlived the trainer"
    assert stopping_s < STOP_GRACE_S / 2, stopping_s
    # and another trainer ends the run from its last stored epoch, each epoch stored once
    done = wait_status(stack, victim, "completed", "failed", "interrupted")
    assert done["status"] == "completed" and done["instance"] != doomed, done
    assert done["attempt"] == 2 and done["message"] is None
    events = asyncio.run(run_events(stack, victim))
    assert [e.epoch for e in events if isinstance(e, c.EpochCompleted)] == [*range(1, epochs + 1)]
    return events


def _takeover_s(events: list[Any]) -> float:
    """From the run handed back to its start on the other trainer."""
    back = next(e for e in events if isinstance(e, c.RunInterrupted)).occurred_at
    again = [e for e in events if isinstance(e, c.RunStarted)][-1].occurred_at
    return (again - back).total_seconds()


async def _holders(stack: Stack) -> set[str]:
    nc = await nats.connect(stack.nats_url)
    try:
        leases = Leases(nc.jetstream())
        await leases.open()
        return {info.holder for info in await leases.holders()}
    finally:
        await nc.close()

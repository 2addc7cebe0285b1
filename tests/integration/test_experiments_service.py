"""A search against the real stack: the trainer's driver starts trials as runs, hears their
epochs and ends, prunes, keeps the front, and survives being killed mid-search.

Experiments are created through the gateway; what the trainer did is read from its events in
the TRAINING stream (the facts, not a read model). Small CNN on tiny generated squares, two
epochs a trial, one trial at a time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from contracts import experiments as x
from contracts import training as c
from services.kernel.eventstore import EventStore
from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split

pytestmark = pytest.mark.integration

STACK_SERVICES = ("projects", "datasets", "trainer", "exporter")
#: Hyperparameters every trial shares: the small CNN learns the squares in an epoch or two.
FIXED = {
    "model": {"type": "fixed", "value": "smallcnn"},
    "batch_size": {"type": "fixed", "value": 8},
    "image_size": {"type": "fixed", "value": 32},
    "augmentation": {"type": "fixed", "value": "none"},
}
TRIALS = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A studio whose device lease expires fast, so a killed trainer's trial resumes soon."""
    s = Stack(
        tmp_path_factory.mktemp("experiments"),
        ("identity", *STACK_SERVICES),
        STUDIO_LEASE_TTL="2",
        STUDIO_TRAINER_SLOT="slot-x",
    )
    try:
        yield s.up()
    finally:
        s.down()


@pytest.fixture(scope="module")
def split(stack: Stack) -> tuple[str, str]:
    return learnable_split(stack, per_class=40, test=0.2)


def create(stack: Stack, split: tuple[str, str], **body: Any) -> str:
    project_id, split_id = split
    doc = {
        "project_id": project_id,
        "split_id": split_id,
        "name": f"search-{uuid.uuid4().hex[:6]}",
        "architecture_type": "smallcnn",
        "max_trials": TRIALS,
        "budget": {"epochs_per_trial": 2, "max_concurrent_trials": 1},
        **body,
    }
    with client(stack) as api:
        answer = api.post(f"{API}/experiments", json=doc)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["data"]["id"])


async def events_of(stack: Stack, *aggregate_ids: str) -> list[Any]:
    nc = await nats.connect(stack.nats_url)
    try:
        store: EventStore[Any] = EventStore(
            nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )
        loaded = await asyncio.gather(*(store.load(a) for a in aggregate_ids))
        return [s.event for stored in loaded for s in stored]
    finally:
        await nc.close()


async def until(stack: Stack, experiment_id: str, done: Any, timeout: float = 480.0) -> list[Any]:
    """The experiment's events once ``done(events)`` holds (polled, with a deadline: a
    generous one, as a search of a few trials is slow on a machine busy with other stacks)."""
    deadline = time.monotonic() + timeout
    while True:
        events = await events_of(stack, experiment_id)
        if done(events):
            return events
        assert time.monotonic() < deadline, [type(e).__name__ for e in events]
        await asyncio.sleep(0.5)


def completed(events: list[Any]) -> bool:
    return any(isinstance(e, x.ExperimentCompleted) for e in events)


def of(kind: type, events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def trial_runs(stack: Stack, events: list[Any]) -> list[Any]:
    return await events_of(stack, *(t.run_id for t in of(x.TrialStarted, events)))


async def test_a_small_search_completes_with_a_front_and_a_trial_is_promoted(
    stack: Stack, split: tuple[str, str]
) -> None:
    experiment_id = create(
        stack,
        split,
        search_config=FIXED
        | {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
        objectives=[
            {"metric": "val_accuracy", "direction": "maximize"},
            {"metric": "latency_ms", "direction": "minimize"},
        ],
        seed=1,
    )
    events = await until(stack, experiment_id, completed)

    end = of(x.ExperimentCompleted, events)
    assert [(e.trials, e.reason) for e in end] == [(TRIALS, "max_trials")]
    trials = of(x.TrialCompleted, events)
    assert sorted(t.trial for t in trials) == list(range(TRIALS))
    assert all(set(t.values) == {"val_accuracy", "latency_ms"} for t in trials)
    front = of(x.FrontUpdated, events)[-1]
    assert front.front and set(front.front) <= set(range(TRIALS))
    assert set(front.best) == {"val_accuracy", "latency_ms"}
    runs = await trial_runs(stack, events)
    queued = of(c.RunQueued, runs)
    assert {r.experiment_id for r in queued} == {experiment_id}
    assert {r.hyperparameters.epochs for r in queued} == {2}
    assert len({r.hyperparameters.learning_rate for r in queued}) == TRIALS  # a search, not one

    best = front.best["val_accuracy"]
    with client(stack) as api:
        promoted = api.post(f"{API}/experiments/{experiment_id}/trials/{best}/promote", json={})
    assert promoted.status_code == 202, promoted.text
    events = await until(stack, experiment_id, lambda es: of(x.TrialPromoted, es))
    promotion = of(x.TrialPromoted, events)[0]
    assert promotion.trial == best
    assert promotion.run_id == x.trial_run_id(experiment_id, best)
    evaluation = await until(
        stack,
        promotion.evaluation_id,
        lambda es: of(c.EvaluationCompleted, es) or of(c.EvaluationFailed, es),
    )
    assert of(c.EvaluationCompleted, evaluation), evaluation


async def test_pruning_stops_a_trial_in_a_bad_region_from_its_epochs(
    stack: Stack, split: tuple[str, str]
) -> None:
    # Seed 0 asks 0.003, 1e-7, 1e-7, 0.003 (checked against the search offline): the first
    # trial learns, and a learning rate of 1e-7 learns nothing in an epoch.
    experiment_id = create(
        stack,
        split,
        search_config=FIXED | {"learning_rate": {"type": "categorical", "choices": [0.003, 1e-7]}},
        objectives=[{"metric": "val_accuracy", "direction": "maximize"}],
        pruning={"kind": "median", "warmup_epochs": 0},
        seed=0,
    )
    events = await until(stack, experiment_id, completed)

    pruned = of(x.TrialPruned, events)
    assert pruned, [type(e).__name__ for e in events]
    assert all(p.epoch == 1 for p in pruned)
    started = {t.trial: t for t in of(x.TrialStarted, events)}
    assert {started[p.trial].params["learning_rate"] for p in pruned} == {1e-7}
    assert of(x.ExperimentCompleted, events)[0].trials == TRIALS
    # A pruned trial's run was stopped after the epoch it was pruned at.
    runs = await events_of(stack, *(p.run_id for p in pruned))
    assert len(of(c.RunStopped, runs)) + len(of(c.RunCompleted, runs)) == len(pruned)


async def test_a_search_goes_on_after_its_trainer_is_killed_and_runs_no_trial_twice(
    stack: Stack, split: tuple[str, str]
) -> None:
    experiment_id = create(
        stack,
        split,
        search_config=FIXED | {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2}},
        pruning={"kind": "none"},  # every trial trains to its end: each run is seen whole
        seed=2,
    )

    def second_trial_training(events: list[Any]) -> bool:
        return len(of(x.TrialCompleted, events)) >= 1 and len(of(x.TrialStarted, events)) >= 2

    await until(stack, experiment_id, second_trial_training)
    stack.kill("trainer")
    stack.start("trainer")
    events = await until(stack, experiment_id, completed)

    started = of(x.TrialStarted, events)
    assert sorted(t.trial for t in started) == list(range(TRIALS))
    assert len({t.run_id for t in started}) == TRIALS
    ended = of(x.TrialCompleted, events) + of(x.TrialFailed, events) + of(x.TrialPruned, events)
    assert Counter(t.trial for t in ended) == Counter(range(TRIALS)), ended
    assert not of(x.TrialFailed, events), of(x.TrialFailed, events)
    assert of(x.ExperimentCompleted, events)[0].trials == TRIALS
    runs = await trial_runs(stack, events)
    assert len(of(c.RunQueued, runs)) == TRIALS  # one run per trial, each queued once
    epochs = Counter((e.run_id, e.epoch) for e in of(c.EpochCompleted, runs))
    assert set(epochs.values()) == {1}  # every epoch of every trial stored once
    assert len(of(c.RunCompleted, runs)) == TRIALS


async def test_a_stopped_search_pauses_its_trial_and_resumes_it_measuring_macro_f1(
    stack: Stack, split: tuple[str, str]
) -> None:
    experiment_id = create(
        stack,
        split,
        search_config=FIXED | {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2}},
        objectives=[{"metric": "macro_f1", "direction": "maximize"}],
        pruning={"kind": "none"},
        max_trials=2,
        # Long enough that the stop comes while the first trial's run is queued or training.
        budget={"epochs_per_trial": 6, "max_concurrent_trials": 1},
        seed=3,
    )
    events = await until(stack, experiment_id, lambda es: of(x.TrialStarted, es))
    first = of(x.TrialStarted, events)[0]
    with client(stack) as api:
        stopped = api.post(f"{API}/experiments/{experiment_id}/stop")
    assert stopped.status_code == 202, stopped.text
    await until(stack, first.run_id, lambda es: of(c.RunStopped, es), timeout=120)
    events = await events_of(stack, experiment_id)
    assert len(of(x.TrialStarted, events)) == 1 and not completed(events)  # paused, not ended
    assert not of(x.TrialFailed, events)

    with client(stack) as api:
        resumed = api.post(f"{API}/experiments/{experiment_id}/resume")
    assert resumed.status_code == 202, resumed.text
    events = await until(stack, experiment_id, completed)

    assert [t.trial for t in of(x.TrialCompleted, events)] == [0, 1]
    assert all(0 <= t.values["macro_f1"] <= 1 for t in of(x.TrialCompleted, events))
    run = await events_of(stack, first.run_id)
    assert len(of(c.RunResumed, run)) == 1  # the same run went on from its checkpoint
    assert [e.epoch for e in of(c.EpochCompleted, run)] == [1, 2, 3, 4, 5, 6]

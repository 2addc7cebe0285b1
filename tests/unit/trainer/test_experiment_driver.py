"""The searches' driver on an in-memory event store: given the stream's events handed to it in
order (as the shared consumer does), then the trials it starts and how the search ends.

The trainer's own commands are fakes that decide with the real Run decider; a run's training is
its events appended by the test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import msgspec

from contracts import common
from contracts import experiments as x
from contracts import training as c
from contracts.common import CommandRejected, Reply
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import domain as runs
from services.trainer.domain import experiment
from services.trainer.experiment_driver import Driver
from services.trainer.experiments import Handler

E = "e" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def created(**changes: Any) -> x.ExperimentCreated:
    command = x.CreateExperiment(
        experiment_id=E, project_id="p" * 32, split_id="s" * 32, name="cats",
        architecture_type="smallcnn", max_trials=3, pruning=x.Pruning(kind="none"),
        search_config={"learning_rate": x.FloatRange(low=1e-3, high=1e-1, log=True)},
    )  # fmt: skip
    event = experiment.create(None, msgspec.structs.replace(command, **changes))[0]
    assert isinstance(event, x.ExperimentCreated)
    return msgspec.structs.replace(event, occurred_at=T0, message_id="create")


class World:
    """One stream, the driver, and the trainer's commands as fakes over the Run decider."""

    def __init__(self) -> None:
        self.store: InMemoryEventStore[Any] = InMemoryEventStore(
            stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )
        self.runs = Repository(self.store, runs.evolve, None)
        self.now = T0
        self.refuse_start: str | None = None
        self.driver = self.new_driver()
        self.handed = 0

    def new_driver(self) -> Driver:
        """A driver as a restarted trainer has it: nothing in memory, the same log."""
        commands: dict[type, Handler] = {
            c.StartRun: self.start_run,
            c.StopRun: self.stop_run,
            c.ResumeRun: self.resume_run,
        }
        experiments = Repository(self.store, experiment.evolve, None)
        return Driver(self.store, experiments, self.runs, commands, clock=lambda: self.now)

    async def start_run(self, command: c.StartRun, headers: Any) -> Reply:
        if self.refuse_start is not None:
            return CommandRejected(code=common.VALIDATION_ERROR, message=self.refuse_start)
        queued = c.RunQueued(
            run_id=command.run_id, experiment_id=command.experiment_id,
            project_id=command.project_id, split_id=command.split_id,
            hyperparameters=command.hyperparameters, classes=["a", "b"], train_images=8,
            val_images=4,
        )  # fmt: skip
        decide = partial(runs.queue, event=queued)
        return await execute(
            self.runs, command.run_id, command, decide, headers={}, refusals=(DomainError,)
        )

    async def stop_run(self, command: c.StopRun, headers: Any) -> Reply:
        decide = partial(runs.stop, command=command)
        return await execute(
            self.runs, command.run_id, command, decide, headers={}, refusals=(DomainError,)
        )

    async def resume_run(self, command: c.ResumeRun, headers: Any) -> Reply:
        decide = partial(runs.resume, command=command)
        return await execute(
            self.runs, command.run_id, command, decide, headers={}, refusals=(DomainError,)
        )

    async def append(self, aggregate_id: str, *events: Any) -> None:
        version = await self.store.version(aggregate_id)
        await self.store.append(aggregate_id, list(events), version)

    async def pump(self) -> None:
        """Hands every event not handed yet to the driver, in stream order, until none is new."""
        while self.handed < len(self.store.events()):
            stored = self.store.events()[self.handed]
            self.handed += 1
            await self.driver.handle(stored.event, {})

    async def train(self, run_id: str, accuracy: float) -> None:
        """The run trains its two epochs and completes (as its trainer would store it)."""
        started = c.RunStarted(
            run_id=run_id, instance="t", device="cpu", lease="l", attempt=1, start_epoch=1
        )
        epochs = [
            c.EpochCompleted(
                run_id=run_id, epoch=n, train_loss=1.0, val_loss=1.0 - accuracy,
                val_accuracy=accuracy, learning_rate=0.01, seconds=1.0, images_per_second=8.0,
            )
            for n in (1, 2)
        ]  # fmt: skip
        done = c.RunCompleted(
            run_id=run_id,
            epochs=2,
            best_epoch=2,
            best_val_accuracy=accuracy,
            params=10,
            latency_ms=1.0,
        )
        await self.append(run_id, started, *epochs, done)
        await self.pump()

    def of(self, kind: type) -> list[Any]:
        return [s.event for s in self.store.events() if isinstance(s.event, kind)]


async def search(spec: x.ExperimentCreated) -> World:
    world = World()
    await world.append(E, spec)
    await world.pump()
    return world


async def test_trials_start_one_at_a_time_until_max_trials_then_the_search_completes() -> None:
    world = await search(created())
    assert [t.trial for t in world.of(x.TrialStarted)] == [0]
    assert [r.run_id for r in world.of(c.RunQueued)] == [x.trial_run_id(E, 0)]
    for n, accuracy in enumerate((0.6, 0.9, 0.7)):
        await world.train(x.trial_run_id(E, n), accuracy)
    assert [t.trial for t in world.of(x.TrialCompleted)] == [0, 1, 2]
    assert [(e.trials, e.reason) for e in world.of(x.ExperimentCompleted)] == [(3, "max_trials")]
    assert world.of(x.FrontUpdated)[-1].front == [1]
    queued = world.of(c.RunQueued)
    assert {q.hyperparameters.epochs for q in queued} == {3}  # the budget's epochs per trial
    assert all(q.experiment_id == E for q in queued)


async def test_an_event_handed_again_starts_nothing_twice() -> None:
    world = await search(created())
    await world.train(x.trial_run_id(E, 0), 0.5)
    for stored in world.store.events():  # every event redelivered, as after a lost ack
        await world.driver.handle(stored.event, {})
    assert [t.trial for t in world.of(x.TrialStarted)] == [0, 1]
    assert len(world.of(c.RunQueued)) == 2
    assert [t.trial for t in world.of(x.TrialCompleted)] == [0]


async def test_a_restarted_driver_rebuilds_the_search_and_continues_its_numbers() -> None:
    world = await search(created())
    await world.train(x.trial_run_id(E, 0), 0.5)
    world.driver = world.new_driver()  # the trainer restarted: no search in memory
    await world.train(x.trial_run_id(E, 1), 0.8)
    await world.train(x.trial_run_id(E, 2), 0.7)
    assert [t.trial for t in world.of(x.TrialStarted)] == [0, 1, 2]
    assert len({t.run_id for t in world.of(x.TrialStarted)}) == 3
    assert world.of(x.ExperimentCompleted)[0].trials == 3


async def test_the_wall_time_ends_the_search_once_its_running_trial_ends() -> None:
    world = await search(created(budget=x.Budget(epochs_per_trial=3, wall_time_s=60)))
    world.now = T0 + timedelta(seconds=61)
    await world.train(x.trial_run_id(E, 0), 0.5)
    assert len(world.of(x.TrialStarted)) == 1
    assert [(e.trials, e.reason) for e in world.of(x.ExperimentCompleted)] == [(1, "wall_time")]


async def test_several_trials_run_at_once_up_to_the_budget() -> None:
    world = await search(created(budget=x.Budget(max_concurrent_trials=2)))
    assert [t.trial for t in world.of(x.TrialStarted)] == [0, 1]
    await world.train(x.trial_run_id(E, 1), 0.5)
    assert [t.trial for t in world.of(x.TrialStarted)] == [0, 1, 2]


async def test_a_trial_whose_run_is_refused_fails_and_the_next_one_is_asked() -> None:
    world = World()
    world.refuse_start = "the split has no validation images"
    await world.append(E, created())
    await world.pump()
    failed = world.of(x.TrialFailed)
    assert [(f.trial, f.code) for f in failed] == [
        (0, "VALIDATION_ERROR"),
        (1, "VALIDATION_ERROR"),
        (2, "VALIDATION_ERROR"),
    ]
    assert world.of(x.ExperimentCompleted)[0].trials == 3


async def test_a_failed_run_fails_its_trial() -> None:
    world = await search(created())
    run_id = x.trial_run_id(E, 0)
    await world.append(run_id, c.RunFailed(run_id=run_id, code="OOM", message="out of memory"))
    await world.pump()
    assert [(f.trial, f.code) for f in world.of(x.TrialFailed)] == [(0, "OOM")]
    assert [t.trial for t in world.of(x.TrialStarted)] == [0, 1]


async def test_stop_stops_the_trials_run_and_starts_nothing_until_resumed() -> None:
    world = await search(created())
    await world.append(E, x.ExperimentStopped(experiment_id=E))
    await world.pump()
    run_id = x.trial_run_id(E, 0)
    assert [s.run_id for s in world.of(c.RunStopped)] == [run_id]  # it was queued: dropped
    assert not world.of(x.TrialFailed) and len(world.of(x.TrialStarted)) == 1


async def test_a_quick_resume_continues_the_run_the_stop_was_still_stopping() -> None:
    world = await search(created())
    run_id = x.trial_run_id(E, 0)
    started = c.RunStarted(
        run_id=run_id, instance="t", device="cpu", lease="l", attempt=1, start_epoch=1
    )
    await world.append(run_id, started)
    await world.append(E, x.ExperimentStopped(experiment_id=E))
    await world.pump()
    assert len(world.of(c.RunStopRequested)) == 1
    await world.append(E, x.ExperimentResumed(experiment_id=E))  # before the run has stopped
    await world.pump()
    assert not world.of(c.RunResumed)
    await world.append(run_id, c.RunStopped(run_id=run_id, epoch=0))
    await world.pump()
    assert [r.run_id for r in world.of(c.RunResumed)] == [run_id]  # the search's stop: it goes on
    assert not world.of(x.TrialFailed) and len(world.of(x.TrialStarted)) == 1


async def test_a_stop_of_the_trials_run_itself_fails_the_trial() -> None:
    world = await search(created())
    run_id = x.trial_run_id(E, 0)
    await world.append(run_id, c.RunStopped(run_id=run_id, epoch=0))
    await world.pump()
    assert [(f.trial, f.code) for f in world.of(x.TrialFailed)] == [(0, "STOPPED")]
    assert not world.of(c.RunResumed)


async def test_what_the_driver_stores_follows_the_trace_of_the_event_it_answers() -> None:
    # given a search created in a request's trace
    trace = "0af7651916cd43dd8448eb211c80319c"
    world = World()
    await world.append(E, created())
    # when the driver handles its creation with the headers it was stored with
    await world.driver.handle(
        world.store.events()[0].event, {"traceparent": f"00-{trace}-b7ad6b7169203331-01"}
    )
    # then the trial it starts is stored in that trace, not in a trace of its own
    started = [s for s in world.store.events() if isinstance(s.event, x.TrialStarted)]
    assert started and trace in started[0].headers.get("traceparent", "")

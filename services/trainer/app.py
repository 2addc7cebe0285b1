"""Composition root of the trainer service: runs, the device lease, the worker, endpoints.

A start imports torch (``engine.pick_devices`` asks it for the devices the leases are of), not
torchvision or the training loop: the engine's names are imported when first used, which the
first run or evaluation does in its thread (about 2.5 CPU-seconds a start saved)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Mapping

from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import datasets as d
from contracts import experiments as x
from contracts import training as c
from contracts.common import Reply
from contracts.envelope import Message
from services.kernel.bus import request
from services.kernel.eventstore import EventStore
from services.kernel.lease import Leases
from services.kernel.projection import ProjectionRunner
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.service import Commands, Parts, answer_commands, run
from services.kernel.settings import Settings
from services.kernel.sqlite import create_engine
from services.kernel.streams import StreamSpec, ensure_stream
from services.trainer import domain, engine
from services.trainer.capacity import Capacity
from services.trainer.checkpoints import CheckpointFiles
from services.trainer.domain import experiment
from services.trainer.domain.evaluation import evolve as evaluation_evolve
from services.trainer.engine import faults
from services.trainer.epochs import Epochs
from services.trainer.evaluations import Evaluations
from services.trainer.experiment_consumer import Consumer
from services.trainer.experiment_driver import Driver
from services.trainer.experiments import Experiments, Handler, SendCommand
from services.trainer.handlers import Training
from services.trainer.images import SplitImages, image_cache
from services.trainer.projection import RunQueue, Runs, trainer_jobs
from services.trainer.runstore import RunStore
from services.trainer.worker import DeviceSlot, Publish, Worker

SERVICE = "trainer"
ARTIFACTS = c.ARTIFACTS_BUCKET
STREAM = StreamSpec(c.STREAM, (c.EVENTS,))


def lease_key(device: str, slot: str | None = None) -> str:
    """One lease per device per machine; ``slot`` (STUDIO_TRAINER_SLOT) names one explicitly."""
    return re.sub(r"[^A-Za-z0-9_=.-]", "-", slot or f"{socket.gethostname()}-{device}")


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    nc = broker.connection
    store = await event_store(nc, settings)
    images = split_images(broker, settings)
    files = CheckpointFiles(await artifacts_bucket(nc), settings.data_dir("artifacts"))
    runs = RunStore(Repository(store, domain.evolve, None), instance=settings.instance,
                    auto_resume=settings.auto_resume)  # fmt: skip
    db = create_engine(settings.data_dir(SERVICE) / "readmodel.db")
    workers: list[Worker] = []  # the read model tells the worker of stops; it is made after
    runner = read_model(nc, db, settings, on_stop=lambda run_id: workers[0].request_stop(run_id))
    queue, slot = RunQueue(db, changed(runner)), await device_slot(nc, settings)
    epochs = Epochs(runs, files)
    worker = Worker(
        runs=runs, slot=slot, queue=queue, images=images, epochs=epochs, publish=publisher(nc)
    )
    workers.append(worker)
    evaluations = Evaluations(Repository(store, evaluation_evolve, None), images=images,
                              files=files, instance=settings.instance)  # fmt: skip
    capacity = Capacity(nc.jetstream(), slot.lease_key, len(slot.slots),
                        ttl=settings.lease_ttl, replicas=settings.stream_replicas)  # fmt: skip
    await capacity.open()
    training = Training(runs.repo, images.datasets, busy(queue, slot.leases),
                        largest=capacity.largest)  # fmt: skip
    experiments = Experiments(Repository(store, experiment.evolve, None),
                              evaluate_run=evaluations.evaluate_run,
                              send=sender(broker, settings))  # fmt: skip
    answer_commands(broker, SERVICE, commands(training, evaluations, experiments), max_workers=4)
    driver = Consumer(nc, search_driver(store, experiments, runs.repo, training, evaluations))

    async def start() -> None:
        await evaluations.reap(runner, db)
        await driver.start()
        announcing = asyncio.create_task(capacity.forever())
        try:
            await worker.serve()
        finally:  # before the connection closes under it
            announcing.cancel()
            await capacity.withdraw()
            await driver.stop()

    return Parts(runner, start)


async def event_store(nc: NATS, settings: Settings) -> EventStore[c.Event]:
    """The training stream (runs and their evaluations), made on first start. Datasets come
    by query (their subsets), so the trainer reads no datasets event."""
    await ensure_stream(nc.jetstream(), STREAM, settings.stream_replicas)
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


def read_model(
    nc: NATS, db: AsyncEngine, settings: Settings, *, on_stop: Callable[[str], None]
) -> ProjectionRunner:
    """The queue of runs and where each is active; the evaluations each instance runs."""
    return ProjectionRunner(
        nc,
        db,
        [Runs(on_stop=on_stop), trainer_jobs()],
        consumer_prefix=f"{SERVICE}-{settings.instance}",
    )


def split_images(broker: NatsBroker, settings: Settings) -> SplitImages:
    """A split's subsets, asked of the datasets service; their files fetched from it into this
    trainer's own cache (it opens no folder of the datasets service)."""
    cache = image_cache(broker.connection, settings.data_dir(SERVICE) / "images")
    return SplitImages(PagedQuery(broker, d.Subjects.SUBSET, d.SubsetPage), cache)


async def artifacts_bucket(nc: NATS) -> ObjectStore:
    """The Object Store bucket of checkpoints, made on first start."""
    js = nc.jetstream()
    try:
        return await js.object_store(ARTIFACTS)
    except NotFoundError:
        return await js.create_object_store(ARTIFACTS)


async def device_slot(nc: NATS, settings: Settings) -> DeviceSlot:
    """The devices the settings pick, each with its lease (faults armed, for the fault tests)."""
    leases = Leases(nc.jetstream(), ttl=settings.lease_ttl, replicas=settings.stream_replicas)
    await leases.open()
    devices = engine.pick_devices(settings.device, settings.trainer_devices)
    faults.arm(settings.fault_point)
    (first, key), *others = zip(devices, lease_keys(devices, settings.slot), strict=True)
    return DeviceSlot(first, key, leases, tuple(others))


def lease_keys(devices: list[str], slot: str | None) -> list[str]:
    """One lease per device: ``lease_key`` of each, told apart by ``.dN`` where devices share a
    name (the CPU "devices" of one machine, or one slot for several GPUs)."""
    keys: list[str] = []
    for index, device in enumerate(devices):
        key = lease_key(device, slot)
        keys.append(f"{key}.d{index}" if key in keys else key)
    return keys


def changed(runner: ProjectionRunner) -> Callable[[float], Awaitable[None]]:
    """Waits until the runs' read model moved on, or ``timeout`` seconds passed."""

    async def wait(timeout: float) -> None:
        await runner.wait_for(c.STREAM, runner.position(c.STREAM) + 1, timeout)

    return wait


def publisher(nc: NATS) -> Publish:
    """Publishes a run's progress, live (core NATS: a lost message is no loss)."""

    async def publish(subject: str, data: bytes) -> None:
        await nc.publish(subject, data)

    return publish


def busy(queue: RunQueue, leases: Leases) -> Callable[[], Awaitable[bool]]:
    """Whether any run is active or queued, or any device leased: the trainer's health."""

    async def answer() -> bool:
        return bool(await queue.active() or await queue.waiting()) or bool(await leases.holders())

    return answer


def commands(training: Training, evaluations: Evaluations, experiments: Experiments) -> Commands:
    return (
        (c.Subjects.START_RUN, c.StartRun, training.start_run),
        (c.Subjects.STOP_RUN, c.StopRun, training.stop_run),
        (c.Subjects.RESUME_RUN, c.ResumeRun, training.resume_run),
        (c.EvaluationSubjects.EVALUATE_RUN, c.EvaluateRun, evaluations.evaluate_run),
        (x.ExperimentSubjects.CREATE_EXPERIMENT, x.CreateExperiment, experiments.create_experiment),
        (x.ExperimentSubjects.STOP_EXPERIMENT, x.StopExperiment, experiments.stop_experiment),
        (x.ExperimentSubjects.RESUME_EXPERIMENT, x.ResumeExperiment, experiments.resume_experiment),
        (x.ExperimentSubjects.PROMOTE_TRIAL, x.PromoteTrial, experiments.promote_trial),
    )


def search_driver(
    store: EventStore[c.Event],
    experiments: Experiments,
    runs: Repository[domain.State],
    training: Training,
    evaluations: Evaluations,
) -> Driver:
    """The searches' driver: this service's own commands, called in-process."""
    handlers: dict[type, Handler] = {
        c.StartRun: training.start_run,
        c.StopRun: training.stop_run,
        c.ResumeRun: training.resume_run,
        c.EvaluateRun: evaluations.evaluate_run,
    }
    return Driver(store, experiments.repo, runs, handlers)


def sender(broker: NatsBroker, settings: Settings) -> SendCommand:
    """Another service's command (the exporter's, for a promoted trial), over NATS."""

    async def send(subject: str, command: Message, headers: Mapping[str, str]) -> Reply:
        return await request(
            broker,
            subject,
            command,
            timeout=settings.request_timeout,
            headers=headers,
            responder_wait=settings.responder_wait,
        )

    return send


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()

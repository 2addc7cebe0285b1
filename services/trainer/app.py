"""Composition root of the trainer service: runs, the device lease, the worker, endpoints."""

from __future__ import annotations

import re
import socket

from faststream.nats import NatsBroker
from nats.js.errors import NotFoundError

from contracts import datasets as d
from contracts import training as c
from services.kernel.blobstore import BlobStore
from services.kernel.bus import command_endpoint
from services.kernel.eventstore import EventStore
from services.kernel.lease import Leases
from services.kernel.projection import ProjectionRunner
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.service import Parts, run
from services.kernel.settings import Settings
from services.kernel.sqlite import create_engine, session
from services.kernel.streams import StreamSpec, ensure_stream
from services.trainer import domain, engine
from services.trainer.domain.evaluation import evolve as evaluation_evolve
from services.trainer.engine import faults
from services.trainer.evaluations import Evaluations
from services.trainer.handlers import Training
from services.trainer.projection import Runs, active, queued, trainer_jobs
from services.trainer.worker import Worker

SERVICE = "trainer"
ARTIFACTS = c.ARTIFACTS_BUCKET


def lease_key(device: str, slot: str | None = None) -> str:
    """One lease per device per machine; ``slot`` (STUDIO_TRAINER_SLOT) names one explicitly."""
    return re.sub(r"[^A-Za-z0-9_=.-]", "-", slot or f"{socket.gethostname()}-{device}")


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    nc = broker.connection
    js = nc.jetstream()
    # datasets come by query (their subsets), so the trainer reads no datasets event
    await ensure_stream(js, StreamSpec(c.STREAM, (c.EVENTS,)), settings.stream_replicas)
    runs_store: EventStore[c.Event] = EventStore(
        nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    datasets = PagedQuery(broker, d.Subjects.SUBSET, d.SubsetPage)  # a split's subset, by query
    runs = Repository(runs_store, domain.evolve, None)
    db = create_engine(settings.data_dir(SERVICE) / "readmodel.db")
    leases = Leases(js, ttl=settings.lease_ttl, replicas=settings.stream_replicas)
    await leases.open()
    try:
        objects = await js.object_store(ARTIFACTS)
    except NotFoundError:
        objects = await js.create_object_store(ARTIFACTS)
    device = engine.pick_device(settings.device)
    faults.arm(settings.fault_point)
    worker_box: list[Worker] = []
    runner = ProjectionRunner(
        nc,
        db,
        [Runs(on_stop=lambda run_id: worker_box[0].request_stop(run_id)), trainer_jobs()],
        consumer_prefix=f"{SERVICE}-{settings.instance}",
    )

    async def publish(subject: str, data: bytes) -> None:
        await nc.publish(subject, data)

    async def changed(timeout: float) -> None:
        await runner.wait_for(c.STREAM, runner.position(c.STREAM) + 1, timeout)

    worker = Worker(
        runs=runs,
        datasets=datasets,
        leases=leases,
        db=db,
        blobs=BlobStore(settings.data_dir("blobs")),
        artifacts=settings.data_dir("artifacts"),
        objects=objects,
        device=device,
        lease_key=lease_key(device, settings.slot),
        instance=settings.instance,
        publish=publish,
        changed=changed,
        auto_resume=settings.auto_resume,
    )
    worker_box.append(worker)

    async def busy() -> bool:
        async with session(db) as s:
            return bool(await active(s) or await queued(s)) or bool(await leases.holders())

    handlers = Training(runs, datasets, busy)
    evaluations = Evaluations(
        evaluations=Repository(runs_store, evaluation_evolve, None),
        datasets=datasets,
        blobs=BlobStore(settings.data_dir("blobs")),
        artifacts=settings.data_dir("artifacts"),
        objects=objects,
        instance=settings.instance,
    )
    endpoints = (
        (c.Subjects.START_RUN, c.StartRun, handlers.start_run),
        (c.Subjects.STOP_RUN, c.StopRun, handlers.stop_run),
        (c.Subjects.RESUME_RUN, c.ResumeRun, handlers.resume_run),
        (c.EvaluationSubjects.EVALUATE_RUN, c.EvaluateRun, evaluations.evaluate_run),
    )
    for subject, command_type, handle in endpoints:
        endpoint = command_endpoint(SERVICE, command_type, handle)  # type: ignore[arg-type]
        broker.subscriber(subject, queue=SERVICE, max_workers=4)(endpoint)

    async def start() -> None:
        await evaluations.reap(runner, db)
        await worker.serve()

    return Parts(runner, start)


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()

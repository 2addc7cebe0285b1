"""Composition root of the datasets service: event store, import jobs and their leases,
endpoints, recovery."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import partial

import msgspec
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import common
from contracts import datasets as c
from contracts import projects as p
from services.datasets import domain, faults, importlease, sources
from services.datasets.folding import FoldingRepository
from services.datasets.gc import Collector
from services.datasets.handlers import Datasets, KnownProject
from services.datasets.importer import Importer, Job
from services.datasets.projection import import_jobs
from services.datasets.queries import Queries
from services.datasets.spill import IndexFile
from services.datasets.uploads import Uploads
from services.kernel import bus, tracing
from services.kernel.blobstore import BlobStore
from services.kernel.eventstore import EventStore
from services.kernel.jobs.runner import CATCH_UP_S
from services.kernel.jobs.table import running_elsewhere
from services.kernel.logs import request_scope
from services.kernel.projection import ProjectionRunner
from services.kernel.queries import query_endpoint
from services.kernel.repository import Repository
from services.kernel.service import Parts, answer_commands, run
from services.kernel.settings import Settings
from services.kernel.sqlite import create_engine
from services.kernel.streams import StreamSpec, ensure_stream

SERVICE = "datasets"
STREAM = StreamSpec(c.STREAM, (c.EVENTS,))
log = logging.getLogger(__name__)
#: How long a cancel heard by an instance not running the import waits for its read model.
CANCEL_WAIT_S = 5.0


def project_finder(nc: NATS) -> EventStore[p.Event]:
    """Projects are read from their own events, so a project made a moment ago is found."""
    return EventStore(nc, stream=p.STREAM, subject=p.event_subject, event_type=p.Event)


async def find_project(projects: EventStore[p.Event], project_id: str) -> KnownProject | None:
    found: KnownProject | None = None
    for stored in await projects.load(project_id):
        event = stored.event
        if isinstance(event, p.ProjectCreated):
            found = KnownProject(id=project_id, task_type=event.task_type)
        elif found is not None and isinstance(event, p.ProjectArchived | p.ProjectRestored):
            found.archived = isinstance(event, p.ProjectArchived)
    return found


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    faults.arm()  # a mistyped test spec stops the start, loudly
    nc = broker.connection
    js = nc.jetstream()
    await ensure_stream(js, STREAM, settings.stream_replicas)
    await ensure_stream(js, StreamSpec(p.STREAM, (p.EVENTS,)), settings.stream_replicas)
    store: EventStore[c.Event] = EventStore(
        nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    data = settings.data_dir(SERVICE)
    engine = create_engine(data / "readmodel.db")
    runner = ProjectionRunner(
        nc, engine, [import_jobs()], consumer_prefix=f"{SERVICE}-{settings.instance}"
    )
    projects = project_finder(nc)
    # A dataset's images live in SQLite beside the read model, folded one event at a time.
    datasets = FoldingRepository(store, IndexFile(data / "index.db"), js)
    handlers = Datasets(
        datasets,
        lambda pid: find_project(projects, pid),
        instance=settings.instance,
        import_roots=settings.import_roots,
        uploads=settings.data_dir("uploads"),
        staging=data / "staging",
        handed=Uploads(js),
    )
    handlers.importer = importer(nc, datasets, settings)
    leases = await importlease.open_leases(js, settings.lease_ttl, settings.stream_replicas)
    handlers.leases = importlease.ImportLeases(leases, settings.instance)
    reaper = importlease.Reaper(
        leases, datasets, engine, instance=settings.instance, active=handlers.active
    )
    endpoints = (
        (c.Subjects.START_IMPORT, c.StartImport, handlers.start_import),
        (c.Subjects.RELABEL_IMAGE, c.RelabelImage, handlers.edit),
        (c.Subjects.DELETE_IMAGE, c.DeleteImage, handlers.edit),
        (c.Subjects.CREATE_SPLIT, c.CreateSplit, handlers.create_split),
        (c.Subjects.DELETE_SPLIT, c.DeleteSplit, handlers.edit),
        (c.Subjects.COLLECT_GARBAGE, c.CollectGarbage, collect_garbage(js, settings)),
    )
    answer_commands(broker, SERVICE, endpoints)
    handlers.runs_elsewhere = partial(runs_elsewhere, runner, engine, settings.instance)
    # No queue group: a cancel must reach the instance running the import, whichever it is.
    broker.subscriber(c.Subjects.CANCEL_IMPORT, no_reply=True, max_workers=4)(
        cancel_endpoint(nc, handlers)
    )
    broker.subscriber(c.Subjects.HEALTH, queue=SERVICE, max_workers=2)(health_endpoint(handlers))
    queries = Queries(store, BlobStore(settings.data_dir("blobs")))
    for subject, query_type, answer in (
        (c.Subjects.SUBSET, c.GetSubset, queries.get_subset),
        (c.Subjects.BLOB, c.GetBlob, queries.get_blob),
    ):
        endpoint = query_endpoint(SERVICE, query_type, answer)  # type: ignore[arg-type]
        broker.subscriber(subject, queue=SERVICE, max_workers=8)(endpoint)
    return Parts(runner, partial(recover, runner, engine, handlers, reaper))


def collect_garbage(js: JetStreamContext, settings: Settings):
    """``CollectGarbage`` answered, and the periodic pass started (``gc``)."""
    collector = Collector(
        js, BlobStore(settings.data_dir("blobs")), settings.data_dir(SERVICE) / "gc.db"
    )
    collector.start()

    async def collect(command: c.CollectGarbage, headers: Mapping[str, str]) -> c.GarbageReport:
        return await collector.collect(command)

    return collect


def importer(nc: NATS, datasets: Repository[domain.Dataset], settings: Settings) -> Importer:
    """The import jobs, on the kernel's job runner; their progress published live."""

    async def publish(job: Job) -> None:
        await nc.publish(c.progress_subject(job.import_id), msgspec.json.encode(job.progress()))

    return Importer(
        BlobStore(settings.data_dir("blobs"), durable=False),
        datasets,
        publish,
        instance=settings.instance,
        zip_limits=sources.ZipLimits(max_archive_bytes=settings.upload_max_bytes),
        spill=settings.data_dir(SERVICE) / "spill",
    )


async def runs_elsewhere(
    runner: ProjectionRunner, engine: AsyncEngine, instance: str, import_id: str, position: int
) -> bool:
    """Whether another instance runs ``import_id``, as the read model says once it shows the
    dataset up to ``position`` (bounded wait: a model that lags says what it knows)."""
    await runner.wait_for(c.STREAM, position, CANCEL_WAIT_S)
    return import_id in await running_elsewhere(engine, domain.IMPORT.noun, instance)


def cancel_endpoint(nc: NATS, handlers: Datasets):
    """``cancel_import`` as every instance hears it: it answers only when ``cancel_import``
    has an answer, so the asker gets the reply of the instance that runs the import."""
    decoder = msgspec.json.Decoder(c.CancelImport)

    async def cancel(msg: NatsMessage) -> None:
        with request_scope(msg.headers), bus.serving("handle", "CancelImport", msg.headers):
            started = time.perf_counter()
            reply: common.Reply | None
            try:
                reply = await handlers.cancel_import(decoder.decode(msg.body), msg.headers or {})
            except msgspec.ValidationError as exc:
                reply = common.CommandRejected(code=common.VALIDATION_ERROR, message=str(exc))
            except Exception:
                log.exception("CancelImport failed")
                reply = common.CommandRejected(code=common.INTERNAL, message="cancel failed")
            if reply is None or not msg.reply_to:
                return
            body = bus.counted_reply(SERVICE, "CancelImport", started, reply, "accepted")
            trace: dict[str, str] = {}
            tracing.inject(trace)  # the asker's trace goes on in the reply, as for any command
            await nc.publish(msg.reply_to, body, headers=trace or None)

    return cancel


def health_endpoint(handlers: Datasets):
    decoder = msgspec.json.Decoder(c.GetHealth)

    async def health(msg: NatsMessage) -> bytes:
        with bus.serving("query", "GetHealth", msg.headers):  # in the asker's trace
            return await report(msg)

    async def report(msg: NatsMessage) -> bytes:
        try:
            return msgspec.json.encode(await handlers.get_health(decoder.decode(msg.body)))
        except Exception as exc:
            log.exception("health report failed")
            return msgspec.json.encode(
                common.CommandRejected(code=common.INTERNAL, message=f"health failed: {exc}")
            )

    return health


async def recover(
    runner: ProjectionRunner, engine: AsyncEngine, handlers: Datasets, reaper: importlease.Reaper
) -> None:
    """Imports left running by an instance that is gone (this one before a restart, or another
    whose lease expired) end as failed, now and then every ``REAP_INTERVAL_S``: nothing of them
    is kept, their staging folders included; so goes any staging folder a crash left behind."""
    assert handlers.importer is not None
    if await runner.caught_up(timeout=CATCH_UP_S):
        for import_id, _ in await reaper.reap():
            await handlers.clear_staging(import_id)
    else:
        log.error("could not read the imports' history; the reaper looks again in a while")
    elsewhere = await running_elsewhere(engine, domain.IMPORT.noun, reaper.instance)
    for import_id in await asyncio.to_thread(handlers.importer.sweep_spill):
        log.warning("removed the staging file of import %s, whose process is gone", import_id)
    for import_id in await handlers.reap_staging(keep=elsewhere):
        log.warning("removed the staging folder of import %s, which no longer runs", import_id)
    if handlers.handed is not None:  # uploads a crashed gateway put but never named
        for name in await handlers.handed.sweep_if_due():
            log.warning("removed the uploaded archive %s, which no import claimed", name)
    await reaper.forever(partial(tidy_ended, handlers))


async def tidy_ended(handlers: Datasets, import_id: str, instance: str) -> None:
    """What an import ended by the reaper left on this workspace goes, once its process is
    dead (``claims``): its upload's folder and its staging file."""
    assert handlers.importer is not None
    await handlers.clear_staging(import_id)
    await asyncio.to_thread(handlers.importer.sweep_spill)


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()

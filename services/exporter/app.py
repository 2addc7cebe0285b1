"""Composition root of the exporter service: the stores, the handler table on its subjects, the
export jobs and their read model, and the reaping of the exports a stop left running.

The export engine (``services.exporter.engine``: torch, torchvision, onnx, onnxruntime) is not
imported here: the first export or prediction imports it, in its worker thread (seconds of CPU
that a start of a service most of which never export no longer pays; the service is ready to
take commands without it, and its /health and /metrics need none of it)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore

from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from services.exporter import domain, handlers
from services.exporter.files import keep_earlier
from services.exporter.jobs import ExportRunner, runner_for
from services.exporter.projection import export_jobs
from services.kernel.artifacts import ensure_object_store
from services.kernel.blobcache import BlobCache, query_pieces
from services.kernel.eventstore import EventStore
from services.kernel.projection import ProjectionRunner
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.service import Parts, answer_commands, run
from services.kernel.settings import Settings
from services.kernel.sqlite import create_engine
from services.kernel.streams import StreamSpec, ensure_stream

SERVICE = "exporter"
STREAMS = (
    StreamSpec(x.STREAM, (x.EVENTS,)),
    StreamSpec(t.STREAM, (t.EVENTS,)),
)  # datasets come by query (a split's subset): no datasets event is read here
log = logging.getLogger(__name__)
COMMANDS = ((x.Subjects.REQUEST_EXPORT, x.RequestExport),)
QUERIES = ((x.Subjects.PREDICT, x.Predict),)
ENGINE = "services.exporter.engine"


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    nc = broker.connection
    js = nc.jetstream()
    for spec in STREAMS:
        await ensure_stream(js, spec, settings.stream_replicas)
    objects, files = [
        await ensure_object_store(js, name, settings.stream_replicas)
        for name in (t.ARTIFACTS_BUCKET, x.EXPORTS_BUCKET)
    ]
    store: EventStore[x.Event] = EventStore(
        nc, stream=x.STREAM, subject=x.event_subject, event_type=x.Event
    )
    exports = Repository(store, domain.evolve, None)
    engine = handlers.OnFirstUse(partial(importlib.import_module, ENGINE))
    workdir = settings.data_dir("exports")
    jobs = ExportRunner(
        runner_for(exports, settings.instance),
        objects=objects,
        artifacts=settings.data_dir("artifacts"),
        workdir=workdir,
        engine=engine,
        files=files,
    )
    sources = handlers.Sources(
        runs=EventStore(nc, stream=t.STREAM, subject=t.event_subject, event_type=t.Event),
        datasets=PagedQuery(broker, d.Subjects.SUBSET, d.SubsetPage),
        images=image_cache(nc, settings.data_dir(SERVICE) / "images"),
    )
    table = handlers.table(
        exports=exports, sources=sources, jobs=jobs, files=workdir, engine=engine
    )
    commands = [(s, t, table[t]) for s, t in COMMANDS]
    answer_commands(broker, SERVICE, commands, max_workers=4)
    for subject, query_type in QUERIES:
        answer = handlers.query_endpoint(query_type, table[query_type])
        broker.subscriber(subject, queue=SERVICE, max_workers=4)(answer)
    db = create_engine(settings.data_dir(SERVICE) / "readmodel.db")
    runner = ProjectionRunner(
        nc, db, [export_jobs()], consumer_prefix=f"{SERVICE}-{settings.instance}"
    )
    return Parts(runner, partial(recover, partial(jobs.reap, runner, db), files, workdir))


def image_cache(nc: NATS, root: Path) -> BlobCache[tuple[str, str]]:
    """The parity images, fetched from the datasets service into this exporter's own folder
    (it opens none of the datasets service's); what a crash left half-fetched is swept."""
    cache = BlobCache(root, query_pieces(nc, d.Subjects.BLOB, handlers.blob_query, d.BlobChunk))
    cache.sweep()
    return cache


async def recover(reap: Callable[[], Awaitable[None]], files: ObjectStore, workdir: Path) -> None:
    """Once running: end the exports a stop left running, then put in the exports bucket the
    files of exports completed before it held them (best effort: a download says if not)."""
    await reap()
    try:
        await keep_earlier(files, workdir)
    except Exception:  # a background task can only say so; the next start tries again
        log.exception("could not put the files of earlier exports in the Object Store")


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()

"""Composition root of the exporter service: exports as jobs, predictions, recovery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

import msgspec
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.js.errors import NotFoundError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from services.exporter import engine
from services.exporter.service import Exporter, evolve
from services.kernel.blobstore import BlobStore
from services.kernel.bus import command_endpoint
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.projection import Decodes, ProjectionRunner
from services.kernel.repository import Repository
from services.kernel.service import Parts, run
from services.kernel.settings import Settings
from services.kernel.sqlite import create_engine, session
from services.kernel.streams import StreamSpec, ensure_stream

SERVICE = "exporter"
ARTIFACTS = "studio_artifacts"
log = logging.getLogger(__name__)


class ExportJob(SQLModel, table=True):
    __tablename__ = "export_jobs"
    export_id: str = Field(primary_key=True)
    run_id: str
    instance: str = Field(index=True)
    status: str = Field(index=True)


class ExportJobs(Decodes):
    """Which exports this service runs, so that after a crash none stays running."""

    name = "exporter-jobs"
    stream = x.STREAM
    filter_subject = x.EVENTS
    event_type = x.Event
    tables: Sequence[Table] = (ExportJob.__table__,)  # type: ignore[attr-defined]

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        if isinstance(event, x.ExportRequested):
            db.add(
                ExportJob(
                    export_id=event.export_id,
                    run_id=event.run_id,
                    instance=event.instance,
                    status="running",
                )
            )
            return
        row = await db.get(ExportJob, event.export_id)
        if row is not None:
            row.status = "ended"
            db.add(row)


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    nc = broker.connection
    js = nc.jetstream()
    for spec in (
        StreamSpec(x.STREAM, (x.EVENTS,)),
        StreamSpec(t.STREAM, (t.EVENTS,)),
        StreamSpec(d.STREAM, (d.EVENTS,)),
    ):
        await ensure_stream(js, spec, settings.stream_replicas)
    try:
        objects = await js.object_store(ARTIFACTS)
    except NotFoundError:
        objects = await js.create_object_store(ARTIFACTS)
    exports: EventStore[x.Event] = EventStore(
        nc, stream=x.STREAM, subject=x.event_subject, event_type=x.Event
    )
    exporter = Exporter(
        exports=Repository(exports, evolve, None),
        runs=EventStore(nc, stream=t.STREAM, subject=t.event_subject, event_type=t.Event),
        datasets=EventStore(nc, stream=d.STREAM, subject=d.event_subject, event_type=d.Event),
        blobs=BlobStore(settings.data_dir("blobs")),
        artifacts=settings.data_dir("artifacts"),
        workdir=settings.data_dir("exports"),
        objects=objects,
        instance=settings.instance,
        engine=engine,
    )
    endpoint = command_endpoint(SERVICE, x.RequestExport, exporter.request_export)
    broker.subscriber(x.Subjects.REQUEST_EXPORT, queue=SERVICE, max_workers=4)(endpoint)
    broker.subscriber(x.Subjects.PREDICT, queue=SERVICE, max_workers=4)(predict_endpoint(exporter))
    db = create_engine(settings.data_dir(SERVICE) / "readmodel.db")
    runner = ProjectionRunner(
        nc, db, [ExportJobs()], consumer_prefix=f"{SERVICE}-{settings.instance}"
    )
    return Parts(runner, partial(recover, runner, db, exporter, settings.instance))


def predict_endpoint(exporter: Exporter) -> Callable[[NatsMessage], Coroutine[Any, Any, bytes]]:
    decoder = msgspec.json.Decoder(x.Predict)

    async def predict(msg: NatsMessage) -> bytes:
        try:
            return msgspec.json.encode(await exporter.predict(decoder.decode(msg.body)))
        except Exception as exc:
            log.exception("prediction failed")
            return msgspec.json.encode(
                common.CommandRejected(code=common.INTERNAL, message=f"prediction failed: {exc}")
            )

    return predict


async def recover(
    runner: ProjectionRunner, db: AsyncEngine, exporter: Exporter, instance: str
) -> None:
    """Exports this instance left running when it stopped end as failed (never running forever)."""
    if not await runner.caught_up(timeout=120):
        return
    async with session(db) as s:
        query = select(ExportJob).where(
            col(ExportJob.instance) == instance, col(ExportJob.status) == "running"
        )
        left = list((await s.exec(query)).all())
    for job in left:
        await exporter.interrupt(job.export_id, job.run_id)


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()

"""Handlers of the exporter: a table from each command and query to the function answering it.

``request_export`` gathers what the decider needs (the run's checkpoint records, the images
parity is checked on), decides against the stored Export, stores it, and hands an accepted
export to the jobs; ``predict`` answers a query from a completed ONNX export. Imports the
domain, ``contracts`` and kernel ports; the stores, the jobs and the engine are passed in.
``OnFirstUse`` makes a thing (the engine's facade, its Predictor) when it is first used, so a
service that never exports or predicts never imports torch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import msgspec
from faststream.nats.annotations import NatsMessage

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.exporter import domain
from services.exporter.jobs import Fetch, Job, Samples
from services.kernel import bus
from services.kernel.blobcache import BlobCache
from services.kernel.commands import execute, rejected
from services.kernel.domain import DomainError
from services.kernel.eventstore import EventStore, check_id
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.transient import TRANSIENT

log = logging.getLogger(__name__)

#: Parity needs at least this many test images (all of them when there are fewer).
PARITY_IMAGES = 100

Handler = Callable[[Any, Mapping[str, str]], Awaitable[Any]]


class OnFirstUse:
    """Stands for what ``make`` returns, made once, when one of its attributes is first asked
    for (in whichever thread asks: an export's or a prediction's worker thread, not the event
    loop). The exporter's engine and Predictor are made so: importing torch, torchvision, onnx
    and onnxruntime costs seconds of CPU, and most exporters that start never export."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make: Callable[[], Any] | None = make
        self._made: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)

    def made(self) -> Any:
        """What ``make`` returned, made now if it was not yet (only once, whatever the threads)."""
        with self._lock:
            if self._make is not None:
                self._made, self._make = self._make(), None
            return self._made


class Jobs(Protocol):
    instance: str

    def start(self, job: Job, headers: Mapping[str, str]) -> None: ...


class Sources:
    """Where a request's facts come from: the run's records and its dataset's images, which
    ``images`` (this exporter's cache) fetches from the datasets service by content hash."""

    def __init__(
        self,
        runs: EventStore[t.Event],
        datasets: PagedQuery[d.SubsetItem],
        images: BlobCache[tuple[str, str]],
    ) -> None:
        self.runs, self.datasets, self.images = runs, datasets, images

    async def gather(self, run_id: str) -> tuple[domain.RunFacts, Samples, Fetch]:
        """The run's facts, its parity images (their paths in the cache) and what fetches their
        files (the export's job calls it: the request is answered without waiting for them)."""
        events = [s.event for s in await self.runs.load(run_id)]
        queued = next((e for e in events if isinstance(e, t.RunQueued)), None)
        if queued is None:
            return domain.RunFacts(exists=False), [], _nothing
        # the latest record of each kind wins: it names the file that kind means now
        saved = {e.kind: e for e in events if isinstance(e, t.CheckpointSaved)}
        items = await self._samples(queued)
        samples = [(self.images.path(item.blob), label) for item, label in items]
        wanted = [(item.blob, (queued.project_id, item.image_id)) for item, _ in items]
        return domain.RunFacts(True, saved, len(samples)), samples, partial(self._fetch, wanted)

    async def _samples(self, queued: t.RunQueued) -> list[tuple[d.SubsetItem, int]]:
        """Test images for parity (validation images when the split has no test subset), as
        the datasets service has them now."""
        index = {label: i for i, label in enumerate(queued.classes)}
        for subset in ("test", "val"):
            query = d.GetSubset(
                dataset_id=queued.project_id, split_id=queued.split_id, subset=subset
            )
            chosen = [
                (item, index[item.label])
                for item in await self.datasets(query)
                if item.label in index
            ]
            if chosen:
                return chosen[: max(PARITY_IMAGES, 256)]
        return []

    async def _fetch(self, wanted: list[tuple[str, tuple[str, str]]]) -> None:
        await self.images.prefetch(wanted)


async def _nothing() -> None:
    return None


def blob_query(where: tuple[str, str], offset: int) -> d.GetBlob:
    """The query of a piece of an image's original file (``where``: dataset, image)."""
    dataset_id, image_id = where
    return d.GetBlob(dataset_id=dataset_id, image_id=image_id, kind="image", offset=offset)


async def request_export(
    command: x.RequestExport,
    headers: Mapping[str, str],
    *,
    exports: Repository[domain.State],
    sources: Sources,
    jobs: Jobs,
) -> Reply:
    try:
        check_id(command.export_id)
        domain.validate(command)  # before any look-up, as its answer does not depend on one
        run, samples, fetch = await sources.gather(command.run_id)
    except DomainError as err:
        return rejected(err)
    except ValueError:  # an id no stream can hold
        return CommandRejected(code=common.NOT_FOUND, message="that run does not exist")
    decide = partial(domain.request, command=command, run=run, instance=jobs.instance)
    reply = await execute(
        exports,
        command.export_id,
        command,
        decide,
        headers=headers,
        refusals=(DomainError,),
        noun="export",
    )
    if isinstance(reply, CommandAccepted) and reply.events:
        record = run.checkpoints[command.checkpoint]
        job = Job(command.export_id, command.run_id, command.format, record, samples, fetch)
        jobs.start(job, headers)
    return reply


async def predict(
    query: x.Predict,
    headers: Mapping[str, str],
    *,
    exports: Repository[domain.State],
    files: Path,
    engine: Any,
    predictor: Any,
) -> x.Predictions | CommandRejected:
    """Top-k classes (or a detector's boxes) of each image, from the export's ONNX file
    (``files/<id>/<file>``).
    ``engine`` is the export engine's facade (its ``BadImage``), ``predictor`` its Predictor."""
    state, _ = await exports.get(query.export_id)
    try:
        export = domain.predictable(state, query)
    except DomainError as err:
        return rejected(err)
    path = files / query.export_id / export.file
    try:
        return await asyncio.to_thread(_answer, predictor, path, query)
    except engine.BadImage as err:
        return CommandRejected(
            code=common.VALIDATION_ERROR,
            message=f"image {err.index + 1} is not a readable image: {err.reason}",
            field=f"images[{err.index}]",
        )


def _answer(predictor: Any, path: Path, query: x.Predict) -> x.Predictions:
    """A classifier's top-k per image, or a detector's boxes per image (all it keeps above
    its score threshold, best first: ``top_k`` is a classifier's setting)."""
    if predictor.task(path) == "detection":
        found = predictor.detect(path, query.images)
        return x.Predictions(
            export_id=query.export_id,
            results=[[] for _ in found],
            task="detection",
            boxes=[[x.DetectedBox(*d) for d in image] for image in found],
        )
    results = predictor.predict(path, query.images, query.top_k)
    return x.Predictions(
        export_id=query.export_id, results=[[(lbl, float(s)) for lbl, s in r] for r in results]
    )


def query_endpoint(query_type: type, handle: Handler) -> Callable[[NatsMessage], Awaitable[bytes]]:
    """A query as a NATS reply. Unlike a command's endpoint, any failure (an undecodable query
    included) is answered INTERNAL with its reason, as predictions always were; NATS out of
    reach is answered UNAVAILABLE, for the caller may try again."""
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(query_type)

    async def answer(msg: NatsMessage) -> bytes:
        with bus.serving("query", query_type.__name__, msg.headers):  # in the asker's trace
            return await answered(msg)

    async def answered(msg: NatsMessage) -> bytes:
        try:
            return msgspec.json.encode(await handle(decoder.decode(msg.body), msg.headers or {}))
        except TRANSIENT as exc:  # the event store out of reach: a retry may well succeed
            log.warning("prediction waits for NATS (%r)", exc)
            return msgspec.json.encode(
                common.CommandRejected(
                    code=common.UNAVAILABLE, message=f"NATS is unreachable: {exc!r}"
                )
            )
        except Exception as exc:  # the endpoint's guard: a query always gets an answer
            log.exception("prediction failed")
            return msgspec.json.encode(
                common.CommandRejected(code=common.INTERNAL, message=f"prediction failed: {exc}")
            )

    return answer


def table(
    *,
    exports: Repository[domain.State],
    sources: Sources,
    jobs: Jobs,
    files: Path,
    engine: Any,
) -> dict[type, Handler]:
    """Each message the exporter answers, with its handler. The engine's Predictor is made by
    the first prediction (``engine`` may be an ``OnFirstUse``: nothing of it is touched here)."""
    predictor = OnFirstUse(lambda: engine.Predictor())
    return {
        x.RequestExport: partial(request_export, exports=exports, sources=sources, jobs=jobs),
        x.Predict: partial(
            predict, exports=exports, files=files, engine=engine, predictor=predictor
        ),
    }

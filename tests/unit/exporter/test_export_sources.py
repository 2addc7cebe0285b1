"""The exporter's sources and its jobs' images: a run's parity images are named in the
exporter's own cache when the request is answered, and fetched from the datasets service (its
blob query, answered here in process by its own handler) by the export's job, before the engine
reads them; a fetch that fails fails the export with its code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from services.datasets.queries import Queries
from services.exporter import domain, handlers
from services.exporter.jobs import ExportRunner, Job
from services.kernel.blobcache import BlobCache
from services.kernel.blobstore import BlobStore
from services.kernel.domain import Refused
from tests.unit.exporter.test_export_handlers import (
    QUEUED,
    RECORD,
    RUN,
    TRACE,
    E,
    FakeEngine,
    FakeObjects,
    P,
    R,
    S,
    local_checkpoint,
    runner,
    store,
)


async def test_the_sources_take_the_latest_record_of_each_kind_and_test_images(
    tmp_path: Path,
) -> None:
    # Given a run with two records of one kind, on a split of three test images whose files
    # only the datasets service's blob store holds
    runs, datasets = store(t), store(d)
    older = replace(RECORD, epoch=1, sha256="0" * 64, message_id="older")
    await runs.append(R, [QUEUED, older, RECORD], 0)
    kept = BlobStore(tmp_path / "datasets")
    ids = {}
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(f"image {name}".encode() * 1000)
        ids[name] = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        kept.put(tmp_path / name, ids[name])
    await datasets.append(P, dataset_events(ids), 0)
    queries = Queries(datasets, kept)
    cache = BlobCache(tmp_path / "cache", answered_by(queries))
    sources = handlers.Sources(runs, subsets(datasets), cache)  # type: ignore[arg-type]

    # When the sources gather the run
    run, samples, fetch = await sources.gather(R)

    # Then the latest record wins, and the run's classes' images are named in the cache, where
    # the job's fetch brings them (the same bytes)
    assert run == domain.RunFacts(True, {"best": RECORD}, 2)
    assert dict(samples) == {cache.path(ids["a"]): 0, cache.path(ids["b"]): 1}
    assert not cache.path(ids["a"]).exists()
    await fetch()
    for name in "ab":
        assert cache.path(ids[name]).read_bytes() == kept.blob_path(ids[name]).read_bytes()
    facts, none, _ = await sources.gather("q" * 32)
    assert (facts, none) == (domain.RunFacts(False), [])


def dataset_events(ids: dict[str, str]) -> list[d.Event]:
    """Three images (cat, dog, bird) in one test subset of split S."""
    split = d.SplitCreated(
        dataset_id=P, split_id=S, name="s", strategy="random", ratios={}, seed=0, images=3,
        groups=3, counts={}, recipe_hash="h",
    )  # fmt: skip
    images = [
        d.ImageRecord(
            image_id=ids[name],
            filename=f"{name}.png",
            label=label,
            width=1,
            height=1,
            size=1,
            format="png",
            phash="0" * 16,
        )
        for name, label in (("a", "cat"), ("b", "dog"), ("c", "bird"))
    ]
    assignment = dict.fromkeys(ids.values(), "test")
    return [
        d.ImagesAdded(dataset_id=P, import_id="i", images=images),
        split,
        d.SplitAssigned(dataset_id=P, split_id=S, part=0, assignment=assignment),
    ]


def answered_by(queries: Queries) -> Any:
    """The blob query, answered in process by the datasets service's own query handler."""

    async def fetch(where: tuple[str, str], offset: int) -> d.BlobChunk:
        asked = handlers.blob_query(where, offset)
        piece = await queries.get_blob(replace(asked, limit=1000), {})
        assert isinstance(piece, d.BlobChunk), piece
        return piece

    return fetch


def subsets(datasets: Any) -> Any:
    """The datasets service's subset query, answered in process from its events."""
    queries = Queries(datasets, BlobStore(Path("unused")))

    async def paged(first: d.GetSubset, headers: Any = None) -> list[d.SubsetItem]:
        page = await queries.get_subset(first, {})
        assert isinstance(page, d.SubsetPage) and page.next is None
        return list(page.items)

    return paged


# --- the job fetches before the engine reads -------------------------------------------------


class ReadingEngine(FakeEngine):
    """The fake engine, which also reads every sample's file as the real one would."""

    def export_onnx(self, checkpoint: Path, out: Path, samples: Any) -> Any:
        self.read = [path.read_bytes() for path, _ in samples]
        return super().export_onnx(checkpoint, out, samples)


async def export_with(tmp_path: Path, engine: FakeEngine, fetch: Any) -> list[x.Event]:
    local_checkpoint(tmp_path, b"the trained weights")
    jobs: ExportRunner = runner(tmp_path, FakeObjects(), engine)
    requested = domain.request(
        None, x.RequestExport(export_id=E, run_id=R), run=RUN, instance="host-1"
    )
    await jobs.exports.store.append(E, requested, 0)
    sample = tmp_path / "cache" / "a.png"
    jobs.start(Job(E, R, "onnx", RECORD, [(sample, 0)], fetch), TRACE)
    for task in list(jobs.tasks):
        await task
    return [s.event for s in await jobs.exports.store.load(E)]


async def test_the_job_fetches_its_images_before_the_engine_reads_them(tmp_path: Path) -> None:
    async def fetch() -> None:
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "a.png").write_bytes(b"fetched")

    engine = ReadingEngine()
    events = await export_with(tmp_path, engine, fetch)
    assert isinstance(events[-1], x.ExportCompleted), events[-1]
    assert engine.read == [b"fetched"]


async def test_an_image_the_dataset_no_longer_holds_fails_the_export_with_its_code(
    tmp_path: Path,
) -> None:
    async def fetch() -> None:
        raise Refused(common.NOT_FOUND, "image a is not in this dataset")

    events = await export_with(tmp_path, ReadingEngine(), fetch)
    assert isinstance(events[-1], x.ExportFailed)
    assert (events[-1].code, events[-1].message) == (
        common.NOT_FOUND,
        "image a is not in this dataset",
    )

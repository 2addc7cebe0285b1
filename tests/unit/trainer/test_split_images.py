"""A run's images: listed from the datasets service's subset query without fetching anything
(an evaluation's command counts them and answers at once), fetched into the trainer's own cache
through the blob query before they are read, each file once; the datasets service's query
handlers answer here in process, over its events and blob store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from contracts import datasets as d
from contracts import training as c
from services.datasets.queries import Queries
from services.kernel.blobcache import BlobCache
from services.kernel.blobstore import BlobStore
from services.kernel.memstore import InMemoryEventStore
from services.trainer.images import SplitImages, blob_query

P, S = "p" * 32, "s" * 32
QUEUED = c.RunQueued(
    run_id="r" * 32, experiment_id="x" * 32, project_id=P, split_id=S,
    hyperparameters=c.Hyperparameters(), classes=["cat", "dog"], train_images=2, val_images=1,
)  # fmt: skip
#: name → (label, subset)
IMAGES = {"a": ("cat", "train"), "b": ("dog", "train"), "c": ("bird", "train"), "d": ("cat", "val")}


async def dataset(tmp_path: Path) -> tuple[Queries, dict[str, str]]:
    """The datasets service's queries over a dataset of IMAGES; their blobs by name."""
    events: InMemoryEventStore[d.Event] = InMemoryEventStore(
        stream=d.STREAM, subject=d.event_subject, event_type=d.Event
    )
    kept, ids = BlobStore(tmp_path / "datasets"), {}
    for name in IMAGES:
        (tmp_path / name).write_bytes(name.encode() * 3000)
        ids[name] = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        kept.put(tmp_path / name, ids[name])
    records = [
        d.ImageRecord(
            image_id=ids[n],
            filename=f"{n}.png",
            label=label,
            width=1,
            height=1,
            size=1,
            format="png",
            phash="0" * 16,
        )
        for n, (label, _) in IMAGES.items()
    ]
    split = d.SplitCreated(
        dataset_id=P, split_id=S, name="s", strategy="random", ratios={}, seed=0, images=4,
        groups=4, counts={}, recipe_hash="h",
    )  # fmt: skip
    assignment = {ids[n]: subset for n, (_, subset) in IMAGES.items()}
    assigned = d.SplitAssigned(dataset_id=P, split_id=S, part=0, assignment=assignment)
    added = d.ImagesAdded(dataset_id=P, import_id="i", images=records)
    await events.append(P, [added, split, assigned], 0)
    return Queries(events, kept), ids


def split_images(queries: Queries, root: Path, asked: list[Any]) -> SplitImages:
    async def subset(first: d.GetSubset, headers: Any = None) -> list[d.SubsetItem]:
        page = await queries.get_subset(first, {})
        assert isinstance(page, d.SubsetPage) and page.next is None
        return list(page.items)

    async def piece(where: tuple[str, str], offset: int) -> d.BlobChunk:
        asked.append((where, offset))
        chunk = await queries.get_blob(blob_query(where, offset), {})
        assert isinstance(chunk, d.BlobChunk), chunk
        return chunk

    return SplitImages(subset, BlobCache(root, piece))  # type: ignore[arg-type]


async def test_a_listing_names_the_run_classes_images_and_fetches_nothing(tmp_path: Path) -> None:
    queries, ids = await dataset(tmp_path)
    asked: list[Any] = []
    images = split_images(queries, tmp_path / "cache", asked)
    listing = await images.listed(QUEUED, "train")
    # the bird is no class of the run's; the val image is in another subset
    assert {(i, label) for i, _, label in listing.images} == {(ids["a"], 0), (ids["b"], 1)}
    assert all(path.parent.parent.parent == tmp_path / "cache" for _, path, _ in listing.images)
    assert asked == [] and not any(p.exists() for _, p, _ in listing.images)


async def test_fetched_images_are_the_datasets_files_read_once(tmp_path: Path) -> None:
    queries, ids = await dataset(tmp_path)
    asked: list[Any] = []
    images = split_images(queries, tmp_path / "cache", asked)
    first = await images.of(QUEUED, "train")
    fetched = len(asked)
    again = await images.fetched(await images.listed(QUEUED, "train"))
    assert first == again and len(asked) == fetched == 2  # 3000 bytes: one piece each
    for image_id, path, _ in first:
        assert (
            path.read_bytes()
            == (tmp_path / "datasets")
            .joinpath("blobs", image_id[:2], image_id[2:4], image_id)
            .read_bytes()
        )
    assert {where for where, _ in asked} == {(P, ids["a"]), (P, ids["b"])}

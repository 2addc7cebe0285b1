"""The images a run trains or is evaluated on: a subset of its split, asked of the datasets
service by query, each file fetched by its ``blob`` address (sha256) into this trainer's own
cache (``kernel.blobcache``) through the datasets service's ``qry.datasets.blob`` query.

The trainer opens no folder of the datasets service, so it may run on another machine: the
first run on a split fetches its images once, a later run (or an evaluation) on the same
images reads them from the cache. ``listed`` names the images without fetching them (a command
handler counts them and answers at once); ``fetched`` brings a listing's files here before a
job reads them; ``of`` does both (the worker, before it trains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NATS

from contracts import datasets as d
from contracts import training as c
from services.kernel.blobcache import BlobCache, query_pieces
from services.kernel.queries import PagedQuery
from services.vision.detectors import is_detector

#: An image of a run's split: its id, its file, the index of its class in the run's classes
#: (-1 in a detection run, whose images are classed by their boxes).
Image = tuple[str, Path, int]
#: A box of a detection run's image: (class index in the run's classes, x, y, w, h) normalised.
Box = tuple[int, float, float, float, float]
#: Where a file comes from: the dataset and the image it holds.
Where = tuple[str, str]


@dataclass(frozen=True)
class Listing:
    """A subset's images (their paths where the cache keeps them) and what to fetch them by."""

    images: list[Image]
    wanted: list[tuple[str, Where]]
    #: A detection run's boxes of each image, by image id (an image without any: a negative).
    boxes: dict[str, tuple[Box, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitImages:
    datasets: PagedQuery[d.SubsetItem]
    files: BlobCache[Where]

    async def listed(self, queued: c.RunQueued, subset: d.Subset) -> Listing:
        """The subset's images of the run's classes, as the datasets service has them now (an
        image relabelled since the run was queued into a class it never had is left out);
        ``Refused`` NOT_FOUND when the split no longer exists. Nothing is fetched yet."""
        index = {label: i for i, label in enumerate(queued.classes)}
        query = d.GetSubset(dataset_id=queued.project_id, split_id=queued.split_id, subset=subset)
        items = await self.datasets(query)
        if is_detector(queued.hyperparameters.model):
            return self._detection(queued, items, index)
        items = [item for item in items if item.label in index]
        return Listing(
            images=[(i.image_id, self.files.path(i.blob), index[i.label]) for i in items],
            wanted=[(i.blob, (queued.project_id, i.image_id)) for i in items],
        )

    def _detection(
        self, queued: c.RunQueued, items: list[d.SubsetItem], index: dict[str, int]
    ) -> Listing:
        """Every image of the subset, negatives included, with its boxes of the run's classes
        (a box of a class added since the run was queued is left out, as such an image is
        from a classifier's run)."""
        return Listing(
            images=[(i.image_id, self.files.path(i.blob), -1) for i in items],
            wanted=[(i.blob, (queued.project_id, i.image_id)) for i in items],
            boxes={
                i.image_id: tuple(
                    (index[b.label], b.x, b.y, b.w, b.h) for b in i.boxes if b.label in index
                )
                for i in items
            },
        )

    async def fetched(self, listing: Listing) -> list[Image]:
        """The listing's images, each file on this machine (fetched when it was not)."""
        await self.files.prefetch(listing.wanted)
        return listing.images

    async def of(self, queued: c.RunQueued, subset: d.Subset) -> list[Image]:
        """The subset's images (``listed``), fetched."""
        return await self.fetched(await self.listed(queued, subset))


def blob_query(where: Where, offset: int) -> d.GetBlob:
    """The query of a piece of an image's original file."""
    dataset_id, image_id = where
    return d.GetBlob(dataset_id=dataset_id, image_id=image_id, kind="image", offset=offset)


def image_cache(nc: NATS, root: Path) -> BlobCache[Where]:
    """This service's cache of dataset images under ``root``, fetched from the datasets
    service; what a crash left half-fetched is swept first."""
    cache = BlobCache(root, query_pieces(nc, d.Subjects.BLOB, blob_query, d.BlobChunk))
    cache.sweep()
    return cache

"""The images a run trains or is evaluated on: a subset of its split, asked of the datasets
service by query, each file read from the blob store by its ``blob`` address."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts import datasets as d
from contracts import training as c
from services.kernel.blobstore import BlobStore
from services.kernel.queries import PagedQuery

#: An image of a run's split: its id, its file, the index of its class in the run's classes.
Image = tuple[str, Path, int]


@dataclass(frozen=True)
class SplitImages:
    datasets: PagedQuery[d.SubsetItem]
    blobs: BlobStore

    async def of(self, queued: c.RunQueued, subset: d.Subset) -> list[Image]:
        """The subset's images of the run's classes, as the datasets service has them now (an
        image relabelled since the run was queued into a class it never had is left out);
        ``Refused`` NOT_FOUND when the split no longer exists."""
        index = {label: i for i, label in enumerate(queued.classes)}
        query = d.GetSubset(dataset_id=queued.project_id, split_id=queued.split_id, subset=subset)
        return [
            (item.image_id, self.blobs.blob_path(item.blob), index[item.label])
            for item in await self.datasets(query)
            if item.label in index
        ]

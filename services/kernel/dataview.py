"""What the trainer needs of a dataset: each image's label and each split's subsets.

Folded straight from the dataset's own events, so a split made a moment ago is seen at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts import datasets as d
from services.kernel.eventstore import EventStore


@dataclass
class DatasetView:
    labels: dict[str, str] = field(default_factory=dict)  # image id → label
    splits: dict[str, dict[str, str]] = field(default_factory=dict)  # split → image → subset

    def apply(self, event: d.Event) -> None:
        match event:
            case d.ImagesAdded():
                self.labels.update((r.image_id, r.label) for r in event.images)
            case d.ImageRelabeled():
                self.labels[event.image_id] = event.label
            case d.ImageDeleted():
                self.labels.pop(event.image_id, None)
            case d.SplitCreated():
                self.splits[event.split_id] = {}
            case d.SplitAssigned():
                self.splits.setdefault(event.split_id, {}).update(event.assignment)
            case d.SplitDeleted():  # a run queued on it from now on is refused as unknown
                self.splits.pop(event.split_id, None)

    def subset(self, split_id: str, name: str) -> list[tuple[str, str]]:
        """(image id, label) of one subset, in image id order; deleted images are left out."""
        members = self.splits.get(split_id, {})
        return [
            (image_id, self.labels[image_id])
            for image_id, subset in sorted(members.items())
            if subset == name and image_id in self.labels
        ]


async def load(store: EventStore[d.Event], dataset_id: str) -> DatasetView:
    view = DatasetView()
    for stored in await store.load(dataset_id):
        view.apply(stored.event)
    return view

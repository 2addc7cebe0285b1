"""CreateSplit on stored events: images imported before near hashes, and reported deviations."""

from __future__ import annotations

import random
from collections import Counter

import msgspec

from contracts import datasets as c
from contracts.envelope import Message
from services.datasets import domain

D = "ds1"


def old_images_added(count: int, labels: int) -> bytes:
    """An ImagesAdded as stored before ``near_hash`` existed: every image has the same dHash, the
    worst case of the old transitive grouping (all one group)."""
    images = [
        {
            "image_id": f"{n:064x}",
            "filename": f"{n}.png",
            "label": f"k{n % labels}",
            "width": 32,
            "height": 32,
            "size": 100,
            "format": "PNG",
            "phash": "0" * 16,
        }
        for n in range(count)
    ]
    event = {"type": "datasets.images_added.v1", "dataset_id": D, "import_id": "i1"}
    return msgspec.json.encode({**event, "images": images})


def create(state: domain.Dataset, ratios: tuple[float, float, float]) -> list[c.Event]:
    train, val, test = ratios
    command = c.CreateSplit(
        dataset_id=D, split_id="s1", name="s", train=train, val=val, test=test, seed=3
    )
    return domain.create_split(state, command)


def test_images_imported_before_near_hashes_are_split_as_singletons() -> None:
    # given 300 images in 10 classes stored before near hashes, all with one old dHash
    stored = msgspec.json.decode(old_images_added(300, 10), type=c.Event)
    assert isinstance(stored, c.ImagesAdded) and stored.images[0].near_hash == ""
    state = domain.evolve(domain.Dataset(), stored)
    # when split 70/15/15
    created, assigned = create(state, (0.7, 0.15, 0.15))
    # then nothing is grouped (exact duplicates only, and a dataset holds a file once), and every
    # class gets its share of every subset
    assert isinstance(created, c.SplitCreated) and isinstance(assigned, c.SplitAssigned)
    assert created.groups == 300 and created.deviations == []
    for label in (f"k{n}" for n in range(10)):
        assert [created.counts[s][label] for s in c.SUBSETS] in ([21, 5, 4], [21, 4, 5], [20, 5, 5])


def test_a_split_that_groups_force_off_its_ratios_says_so() -> None:
    # given a class of 20 images of which 15 are near copies, and a class of 30 distinct ones
    rng = random.Random(1)
    base = rng.getrandbits(255)
    hashes = [base ^ (1 << k) for k in range(15)] + [rng.getrandbits(255) for _ in range(35)]
    records = [
        c.ImageRecord(
            image_id=f"{n:064x}",
            filename=f"{n}.png",
            label="a" if n < 20 else "b",
            width=32,
            height=32,
            size=100,
            format="PNG",
            phash="0" * 16,
            near_hash=f"{h:064x}",
        )
        for n, h in enumerate(hashes)
    ]
    state = domain.evolve(
        domain.Dataset(), c.ImagesAdded(dataset_id=D, import_id="i1", images=records)
    )
    # when split 50/25/25
    created, _ = create(state, (0.5, 0.25, 0.25))
    assert isinstance(created, c.SplitCreated)
    # then the event lists class "a"'s deviations, and survives a round trip as stored
    assert {d.label for d in created.deviations} == {"a"}
    assert Counter(d.subset for d in created.deviations)["train"] == 1
    decoded = msgspec.json.decode(msgspec.json.encode(created), type=c.Event)
    assert isinstance(decoded, Message) and decoded == created

"""The datasets service's queries, against the in-memory event store and a blob store in a temp
folder: a split's subset page by page, read-your-writes, deleted images, an image's bytes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from contracts import common
from contracts import datasets as c
from contracts.common import CommandRejected
from services.datasets.queries import Queries
from services.kernel.blobstore import BlobStore
from services.kernel.memstore import InMemoryEventStore

D = "ds1"


def image_id(n: int) -> str:
    return f"{n:064x}"


def record(n: int, label: str) -> c.ImageRecord:
    return c.ImageRecord(
        image_id=image_id(n),
        filename=f"{label}/{n}.png",
        label=label,
        width=8,
        height=8,
        size=10,
        format="PNG",
        phash="0" * 16,
    )


def store() -> InMemoryEventStore[c.Event]:
    return InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


async def given_images(events: InMemoryEventStore[c.Event], labels: dict[int, str]) -> None:
    records = [record(n, label) for n, label in labels.items()]
    for start in range(0, len(records), 1000):
        added = c.ImagesAdded(dataset_id=D, import_id="imp", images=records[start : start + 1000])
        await events.append(D, [added], await events.version(D))


async def given_split(
    events: InMemoryEventStore[c.Event], split_id: str, assignment: dict[int, str]
) -> None:
    created = c.SplitCreated(
        dataset_id=D,
        split_id=split_id,
        name=split_id,
        strategy="random",
        ratios={"train": 0.5, "val": 0.5, "test": 0.0},
        seed=0,
        images=len(assignment),
        groups=len(assignment),
        counts={},
        recipe_hash="",
    )
    assigned = c.SplitAssigned(
        dataset_id=D,
        split_id=split_id,
        part=0,
        assignment={image_id(n): subset for n, subset in assignment.items()},
    )
    await events.append(D, [created, assigned], await events.version(D))


async def then(events: InMemoryEventStore[c.Event], event: c.Event) -> None:
    await events.append(D, [event], await events.version(D))


async def every_page(queries: Queries, split_id: str, subset: c.Subset, limit: int) -> list:
    """(pages, items) read the way a client reads them: from "" until ``next`` is None."""
    pages: list[c.SubsetPage] = []
    after = ""
    while True:
        page = await queries.get_subset(
            c.GetSubset(dataset_id=D, split_id=split_id, subset=subset, after=after, limit=limit),
            {},
        )
        assert isinstance(page, c.SubsetPage), page
        pages.append(page)
        if page.next is None:
            return pages
        after = page.next


def ids(pages: list[c.SubsetPage]) -> list[str]:
    return [item.image_id for page in pages for item in page.items]


@pytest.fixture
def queries(tmp_path: Path) -> tuple[InMemoryEventStore[c.Event], Queries, BlobStore]:
    events, blobs = store(), BlobStore(tmp_path, durable=False)
    return events, Queries(events, blobs), blobs


async def test_a_dataset_of_several_full_pages_is_read_whole_in_image_id_order(queries):
    events, query, _ = queries
    n = c.SUBSET_PAGE_MAX * 2 + 500
    await given_images(events, {i: "cat" if i % 2 else "dog" for i in range(n)})
    await given_split(events, "s", {i: "train" for i in range(n)})
    pages = await every_page(query, "s", "train", c.SUBSET_PAGE_MAX)
    assert [len(p.items) for p in pages] == [c.SUBSET_PAGE_MAX, c.SUBSET_PAGE_MAX, 500]
    assert ids(pages) == sorted(image_id(i) for i in range(n))
    assert pages[0].items[0] == c.SubsetItem(image_id(0), "dog", blob=image_id(0))


async def test_a_page_ends_exactly_where_the_subset_ends(queries):
    events, query, _ = queries
    await given_images(events, {i: "cat" for i in range(6)})
    await given_split(events, "s", {i: "val" for i in range(6)})
    pages = await every_page(query, "s", "val", 3)
    assert [len(p.items) for p in pages] == [3, 3]  # no empty third page
    assert pages[-1].next is None


async def test_only_the_asked_subset_is_answered(queries):
    events, query, _ = queries
    await given_images(events, {i: "cat" for i in range(9)})
    await given_split(events, "s", {i: ("train", "val", "test")[i % 3] for i in range(9)})
    assert ids(await every_page(query, "s", "test", 100)) == [image_id(i) for i in (2, 5, 8)]


async def test_a_split_made_a_moment_ago_is_seen_at_once(queries):
    events, query, _ = queries
    await given_images(events, {i: "cat" for i in range(4)})
    await given_split(events, "old", {i: "train" for i in range(4)})
    assert len(ids(await every_page(query, "old", "train", 10))) == 4  # the view is now cached
    await given_split(events, "new", {0: "train", 1: "val", 2: "train", 3: "val"})
    assert ids(await every_page(query, "new", "val", 10)) == [image_id(1), image_id(3)]


async def test_deleted_images_are_left_out_and_relabelled_ones_carry_their_new_label(queries):
    events, query, _ = queries
    await given_images(events, {i: "cat" for i in range(10)})
    await given_split(events, "s", {i: "train" for i in range(10)})
    first = await every_page(query, "s", "train", 4)
    assert len(ids(first)) == 10
    for n in (0, 4, 5, 9):
        await then(events, c.ImageDeleted(dataset_id=D, image_id=image_id(n)))
    relabel = c.ImageRelabeled(dataset_id=D, image_id=image_id(1), label="dog", previous="cat")
    await then(events, relabel)
    pages = await every_page(query, "s", "train", 4)
    assert ids(pages) == [image_id(n) for n in (1, 2, 3, 6, 7, 8)]
    assert pages[0].items[0].label == "dog"


async def test_a_cursor_survives_an_image_deleted_between_two_pages(queries):
    events, query, _ = queries
    await given_images(events, {i: "cat" for i in range(6)})
    await given_split(events, "s", {i: "train" for i in range(6)})
    first = await query.get_subset(
        c.GetSubset(dataset_id=D, split_id="s", subset="train", limit=3), {}
    )
    assert isinstance(first, c.SubsetPage) and first.next == image_id(2)
    await then(events, c.ImageDeleted(dataset_id=D, image_id=image_id(2)))
    rest = await query.get_subset(
        c.GetSubset(dataset_id=D, split_id="s", subset="train", after=first.next), {}
    )
    assert isinstance(rest, c.SubsetPage)
    assert [i.image_id for i in rest.items] == [image_id(n) for n in (3, 4, 5)]


@pytest.mark.parametrize("split_id", ["never-made", "deleted"])
async def test_an_unknown_or_deleted_split_is_not_found(queries, split_id):
    events, query, _ = queries
    await given_images(events, {0: "cat"})
    await given_split(events, "deleted", {0: "train"})
    await then(events, c.SplitDeleted(dataset_id=D, split_id="deleted"))
    reply = await query.get_subset(c.GetSubset(dataset_id=D, split_id=split_id, subset="train"), {})
    assert isinstance(reply, CommandRejected)
    assert (reply.code, reply.field) == (common.NOT_FOUND, "split_id")


def test_a_full_page_of_the_longest_labels_stays_far_under_the_payload_limit():
    label = "\U0001f600" * c.LABEL_MAX  # 4 bytes each in UTF-8: the longest a label encodes
    items = [c.SubsetItem(image_id(i), label, image_id(i)) for i in range(c.SUBSET_PAGE_MAX)]
    page = c.SubsetPage(dataset_id="x" * 128, split_id="y" * 128, subset="train", items=items)
    assert len(msgspec.json.encode(page)) < 8 * 1024 * 1024 // 4


def test_a_full_blob_chunk_stays_under_the_payload_limit():
    chunk = c.BlobChunk(
        dataset_id="x",
        image_id="y",
        kind="image",
        offset=0,
        size=1,
        data=b"\xff" * c.BLOB_CHUNK_MAX,
    )
    assert len(msgspec.json.encode(chunk)) < 8 * 1024 * 1024 // 4


async def test_an_image_and_its_thumbnail_are_read_piece_by_piece(queries, tmp_path: Path):
    events, query, blobs = queries
    await given_images(events, {7: "cat"})
    original = bytes(range(256)) * 40
    source = tmp_path / "src"
    source.write_bytes(original)
    blobs.put(source, image_id(7))
    blobs.put_thumb(image_id(7), b"thumb")
    got, offset = b"", 0
    while True:
        ask = c.GetBlob(dataset_id=D, image_id=image_id(7), offset=offset, limit=4096)
        chunk = await query.get_blob(ask, {})
        assert isinstance(chunk, c.BlobChunk) and chunk.size == len(original)
        got, offset = got + chunk.data, offset + len(chunk.data)
        if offset >= chunk.size:
            break
    assert got == original
    thumb = await query.get_blob(
        c.GetBlob(dataset_id=D, image_id=image_id(7), kind="thumbnail"), {}
    )
    assert isinstance(thumb, c.BlobChunk) and thumb.data == b"thumb" and thumb.size == 5


async def test_an_image_not_in_the_dataset_or_without_its_file_is_not_found(queries):
    events, query, blobs = queries
    await given_images(events, {1: "cat"})  # its file was never stored
    blobs.put_thumb(image_id(2), b"thumb")  # stored, but of no image of this dataset
    for n, kind in ((1, "image"), (1, "thumbnail"), (2, "thumbnail")):
        ask = c.GetBlob(dataset_id=D, image_id=image_id(n), kind=kind)  # type: ignore[arg-type]
        reply = await query.get_blob(ask, {})
        assert isinstance(reply, CommandRejected) and reply.code == common.NOT_FOUND


async def given_boxed_images(events: InMemoryEventStore[c.Event], boxes: dict[int, int]) -> None:
    """Images ``n`` with ``boxes[n]`` boxes each (0: a detection negative, label "")."""
    records = [
        msgspec.structs.replace(
            record(n, "car" if count else ""),
            boxes=[c.Box("car", 0.1, 0.2, 0.3, 0.4 * (k + 1) / count) for k in range(count)],
        )
        for n, count in boxes.items()
    ]
    await events.append(D, [c.ImagesAdded(dataset_id=D, import_id="i", images=records)], 0)


async def test_each_item_carries_its_boxes_and_a_negative_none(queries):
    events, query, _ = queries
    await given_boxed_images(events, {0: 2, 1: 0})
    await given_split(events, "s", {0: "train", 1: "train"})
    [page] = await every_page(query, "s", "train", 10)
    assert [len(i.boxes) for i in page.items] == [2, 0]
    assert page.items[0].boxes[1] == c.Box("car", 0.1, 0.2, 0.3, 0.4)
    await then(events, c.ImageDeleted(dataset_id=D, image_id=image_id(0)))
    assert ids(await every_page(query, "s", "train", 10)) == [image_id(1)]


async def test_a_page_of_images_with_many_boxes_ends_before_the_payload_limit(queries):
    events, query, _ = queries
    await given_boxed_images(events, dict.fromkeys(range(60), 500))
    await given_split(events, "s", dict.fromkeys(range(60), "train"))
    pages = await every_page(query, "s", "train", c.SUBSET_PAGE_MAX)
    assert len(pages) > 1 and len(ids(pages)) == 60
    assert all(len(msgspec.json.encode(p)) <= c.SUBSET_PAGE_BYTES for p in pages)

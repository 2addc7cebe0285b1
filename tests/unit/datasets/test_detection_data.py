"""A detection dataset past its import: multi-label stratified splits that stay leak-free, the
health report's box figures, and boxes kept in the SQLite image index (rebuilt when an index
from before boxes is found)."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from pathlib import Path

import msgspec

from contracts import datasets as c
from services.datasets import domain, health
from services.datasets.imageindex import MemoryIndex, batches, image_of
from services.datasets.spill import IndexFile, StagedFile
from services.datasets.splits import SplitItem, group_duplicates, split

RATIOS = (0.7, 0.15, 0.15)


def rng_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(255):064x}"


def detection_items() -> list[SplitItem]:
    """400 images: cars nearly everywhere, people in a third, a rare bike in 20 images that
    always show a car too (so never their image's main label), 40 negatives, and 30 groups of
    three near-duplicates."""
    rng = random.Random(16)
    items = []
    for n in range(400):
        classes = {"car"} if n % 10 else set()
        classes |= {"person"} if n % 3 == 0 else set()
        classes |= {"bike", "car"} if n % 20 == 7 else set()
        classes = set() if n >= 360 else classes
        items.append(SplitItem(f"i{n:04d}", "car" if classes else "", rng_hash(rng), None,
                               frozenset(classes)))  # fmt: skip
    for g in range(30):  # near-duplicates of a car-and-person image
        centre = rng_hash(rng)
        for k in range(3):
            flipped = f"{int(centre, 16) ^ (1 << k):064x}"
            items.append(
                SplitItem(f"g{g:02d}{k}", "car", flipped, None, frozenset({"car", "person"}))
            )
    return items


def test_a_multi_label_split_gives_every_class_its_share_and_keeps_groups_whole() -> None:
    items = group_duplicates(detection_items())
    made = split(items, RATIOS, "stratified", seed=3)
    per_class: Counter[tuple[str, str]] = Counter()
    sizes: Counter[str] = Counter()
    for item in items:
        assert item.classes is not None
        for key in item.classes or {""}:
            per_class[key, made.assignment[item.image_id]] += 1
            sizes[key] += 1
    for key, size in sizes.items():
        for subset, ratio in zip(("train", "val", "test"), RATIOS, strict=True):
            assert abs(per_class[key, subset] - size * ratio) <= 3, (key, subset, per_class)
    assert per_class["bike", "val"] >= 2 and per_class["bike", "test"] >= 2
    groups: dict[str, set[str]] = {}
    for item in items:
        assert item.group is not None
        groups.setdefault(item.group, set()).add(made.assignment[item.image_id])
    assert all(len(subsets) == 1 for subsets in groups.values())
    assert split(list(reversed(items)), RATIOS, "stratified", 3).assignment == made.assignment


def record(n: int, boxes: list[c.Box], label: str = "") -> c.ImageRecord:
    return c.ImageRecord(image_id=f"{n:064x}", filename=f"{n}.png", label=label, width=200,
                         height=100, size=1, format="PNG", phash="0" * 16, boxes=boxes,
                         near_hash="-")  # fmt: skip


def test_a_detection_project_s_split_is_stratified_by_the_classes_its_boxes_show() -> None:
    records = [record(n, [c.Box("car", .1, .1, .2, .2)] + [c.Box("bike", .5, .5, .1, .1)]
                      * (n % 10 == 0), "car") for n in range(60)]  # fmt: skip
    state = domain.Dataset(images=MemoryIndex({r.image_id: image_of(r) for r in records}))
    command = c.CreateSplit(dataset_id="d", split_id="s", name="s", train=0.6, val=0.2, test=0.2)
    created = domain.create_split(state, command, task="detection")[0]
    assignment = {}
    for event in domain.create_split(state, command, task="detection")[1:]:
        assert isinstance(event, c.SplitAssigned)
        assignment.update(event.assignment)
    bikes = Counter(assignment[r.image_id] for r in records if len(r.boxes) > 1)
    assert bikes == {"train": 4, "val": 1, "test": 1}
    assert isinstance(created, c.SplitCreated) and created.images == 60


def facts(n: int, boxes: list[c.Box], w: int = 200, h: int = 100) -> health.ImageFacts:
    return health.ImageFacts(f"{n}", f"{n}.png", "x", f"{n}", "0" * 16, w, h, "-", boxes)


def test_the_health_report_counts_boxes_by_size_edge_degeneracy_and_class() -> None:
    images = [
        facts(1, [c.Box("car", 0.1, 0.1, 0.1, 0.1),  # 20x10 px: small
                  c.Box("car", 0.2, 0.2, 0.5, 0.5),  # 100x50: medium
                  c.Box("car", 0.0, 0.0, 1.0, 1.0)]),  # whole image: large, touching the edge
        facts(2, [c.Box("bike", 0.5, 0.5, 0.001, 0.3)]),  # 0.2 px wide: degenerate
        facts(3, []),
    ]  # fmt: skip
    report = health.report(images, [], [], detection=True)
    boxes = report["boxes"]
    assert boxes["total"] == 4 and boxes["negatives"] == 1
    assert boxes["per_image"] == {"min": 0, "max": 3, "mean": 1.33, "median": 1}
    assert boxes["sizes"] == {"small": 2, "medium": 1, "large": 1}
    assert boxes["by_class"] == {"bike": 1, "car": 3}
    assert boxes["imbalance"] == {"ratio": 3.0, "largest": "car", "smallest": "bike"}
    assert boxes["touching_edge"]["count"] == 1 and boxes["outside"]["count"] == 0
    assert [e["filename"] for e in boxes["degenerate"]["listed"]] == ["2.png"]
    assert report["classes"] == {"bike": 1, "car": 1}
    assert any("under a pixel" in w for w in report["warnings"])
    assert any("imbalanced by boxes" in w for w in report["warnings"])
    assert "boxes" not in health.report([facts(4, [])], [], [])  # classification: as before


def test_the_sqlite_index_keeps_boxes(tmp_path: Path) -> None:
    index = IndexFile(tmp_path / "index.db")
    boxes = [c.Box("car", 0.1, 0.2, 0.3, 0.4), c.Box("bike", 0.5, 0.5, 0.1, 0.1)]
    found = index.index("d").with_added([record(1, boxes), record(2, [])])
    assert found[f"{1:064x}"].boxes == tuple(boxes)
    assert found[f"{1:064x}"].classes == {"car", "bike"}
    assert [img.boxes for _, img in found.items()] == [tuple(boxes), ()]


def test_an_index_from_before_boxes_is_rebuilt_from_the_events(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE images (dataset_id TEXT, image_id TEXT, filename TEXT, label TEXT,"
        " phash TEXT, width INTEGER, height INTEGER, near_hash TEXT,"
        " PRIMARY KEY (dataset_id, image_id)) WITHOUT ROWID;"
        "CREATE TABLE folds (dataset_id TEXT PRIMARY KEY, position INTEGER, version INTEGER,"
        " state BLOB);"
        "INSERT INTO images VALUES ('d', 'x', 'x.png', 'car', '', 1, 1, '');"
        "INSERT INTO folds VALUES ('d', 5, 5, x'7b7d');"
    )
    old.commit()
    old.close()
    index = IndexFile(path)
    assert index.fold("d") is None and len(index.index("d")) == 0  # folded again from its events


def test_a_detection_split_counts_each_image_once_by_its_label() -> None:
    # counts stay images per label (the totals of a subset are its images); how each class's
    # images spread is what the split stratified, reported through its deviations
    boxes = [c.Box("car", 0.1, 0.1, 0.2, 0.2), c.Box("bike", 0.5, 0.5, 0.1, 0.1)]
    records = [record(n, boxes if n < 8 else [], "car" if n < 8 else "") for n in range(10)]
    state = domain.Dataset(images=MemoryIndex({r.image_id: image_of(r) for r in records}))
    command = c.CreateSplit(dataset_id="d", split_id="s", name="s", train=0.6, val=0.2, test=0.2)
    created = domain.create_split(state, command, task="detection")[0]
    assert isinstance(created, c.SplitCreated)
    totals: Counter[str] = Counter()
    for subset in created.counts.values():
        totals.update(subset)
    assert totals == {"car": 8, "": 2} and created.deviations == []


def test_batches_end_at_the_image_count_or_the_byte_limit_whichever_comes_first() -> None:
    assert batches([10] * 5, images=2, limit=100) == [(0, 2), (2, 4), (4, 5)]
    assert batches([40, 40, 40, 200, 10], images=10, limit=100) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert batches([], images=2, limit=100) == []


def test_an_import_of_images_with_many_boxes_is_stored_in_events_under_the_payload_limit(
    tmp_path: Path,
) -> None:
    many = [c.Box("pedestrian", 0.123456789, 0.2, 0.0123456789, 0.05)] * 300
    staged = StagedFile(tmp_path / "i.db")
    staged.add([record(n, many, "pedestrian") for n in range(400)])
    state = domain.Dataset(imports={"i": "running"})
    report = c.ImportReport(format="coco", files=400, imported=400)
    events = domain.commit(state, "d", "i", staged, report)
    added = [e for e in events if isinstance(e, c.ImagesAdded)]
    assert sum(len(e.images) for e in added) == 400 and len(added) > 1
    assert all(len(msgspec.json.encode(e)) < 8 * 1024 * 1024 // 2 for e in added)
    staged.close()

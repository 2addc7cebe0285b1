"""A detection dataset over REST against the running studio: a COCO file written by a
third-party converter (globox) imports into a detection project with every box, its bad
annotations reported per file; the browse API and the health report show the boxes; a split is
stratified by the classes in each image; the dataset exported to COCO and to YOLO imports
again into new projects with the same boxes on the same images."""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from globox import Annotation, AnnotationSet, BoundingBox

from tests import imagesets
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
API = "/api/v1"
CLASSES = ("car", "bike", "person")


async def detection_project(api: httpx.AsyncClient) -> str:
    body = {"name": f"det-{uuid.uuid4().hex[:8]}", "task_type": "detection"}
    resp = await api.post(f"{API}/projects", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


async def imported(api: httpx.AsyncClient, pid: str, path: Path) -> dict:
    body = {"project_id": pid, "path": str(path), "format": "auto"}
    resp = await api.post(f"{API}/datasets/import/local", json=body)
    assert resp.status_code == 202, resp.text
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        data = (await api.get(f"{API}/datasets/import/{resp.json()['data']['id']}")).json()["data"]
        if data["state"] in ("completed", "failed", "cancelled"):
            assert data["state"] == "completed", data
            return data["report"]
        assert asyncio.get_running_loop().time() < deadline, data
        await asyncio.sleep(0.1)


async def boxes_of(api: httpx.AsyncClient, pid: str, **where: str) -> dict[str, list[tuple]]:
    """Each image's boxes as the browse API shows them, by image id (its bytes' sha256)."""
    found: dict[str, list[tuple]] = {}
    cursor = None
    while True:
        params = {"limit": 50, **where, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(f"{API}/datasets/{pid}/images", params=params)).json()["data"]
        for item in page["items"]:
            found[item["id"]] = sorted(
                (b["label"], *(round(b[k], 5) for k in "xywh")) for b in item["boxes"] or []
            )
        if (cursor := page["next_cursor"]) is None:
            return found


def globox_coco(root: Path, count: int) -> tuple[AnnotationSet, int]:
    """``count`` noise images with 0-3 boxes each, written by globox as COCO; one image whose
    annotation is then made bad (zero width), and one annotation of an image not listed."""
    rng = random.Random(16)
    annotations = []
    (root / "images").mkdir(parents=True)
    for n in range(count):
        width, height = 40 + n % 7, 36
        imagesets.noise(1600 + n, 40).resize((width, height)).save(root / "images" / f"i{n}.png")
        boxes = []
        for _ in range(n % 4):
            x, y = rng.randint(0, 20), rng.randint(0, 18)
            right, bottom = x + rng.randint(4, 19), y + rng.randint(4, 17)
            boxes.append(BoundingBox(label=rng.choice(CLASSES), xmin=x, ymin=y, xmax=right,
                                     ymax=bottom))  # fmt: skip
        annotations.append(Annotation(f"i{n}.png", (width, height), boxes))
    written = AnnotationSet(annotations)
    written.save_coco(root / "annotations.json", auto_ids=True)
    doc = json.loads((root / "annotations.json").read_text())
    bad = next(i["id"] for i in doc["images"] if i["file_name"] == "i1.png")
    doc["annotations"].append({"id": 9001, "image_id": bad, "category_id": 1, "bbox": [1, 1, 0, 5]})
    doc["annotations"].append({"id": 9002, "image_id": 777, "category_id": 1, "bbox": [1, 1, 5, 5]})
    (root / "annotations.json").write_text(json.dumps(doc))
    return written, sum(len(a.boxes) for a in annotations if a.image_id != "i1.png")


async def export_into(
    api: httpx.AsyncClient, pid: str, fmt: str, stack: Stack, split_id: str | None = None
) -> tuple[str, dict]:
    params = {"format": fmt, **({"split_id": split_id} if split_id else {})}
    resp = await api.get(f"{API}/datasets/{pid}/export", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    root = stack.imports / uuid.uuid4().hex
    zipfile.ZipFile(io.BytesIO(resp.content)).extractall(root)
    summary = json.loads((root / "export.json").read_text())
    (root / "export.json").unlink()
    again = await detection_project(api)
    report = await imported(api, again, root)
    assert report["label_problems"] == [] and report["skipped"] == [], report
    return again, summary


async def test_a_detection_dataset_imports_browses_splits_and_exports_with_every_box(
    api, stack: Stack
):
    pid = await detection_project(api)
    root = stack.imports / uuid.uuid4().hex
    written, total = globox_coco(root, 24)
    report = await imported(api, pid, root)
    problems = {p["file"]: p["reason"] for p in report["label_problems"]}
    assert set(problems) == {"annotations.json", "images/i1.png"}, problems
    assert report["imported"] == 23 and report["format"] == "coco"

    boxes = await boxes_of(api, pid)
    assert len(boxes) == 23 and sum(len(b) for b in boxes.values()) == total
    assert sum(1 for b in boxes.values() if not b) == 6  # negatives kept (i0, i4, ... not i1)

    yolo = stack.imports / uuid.uuid4().hex  # the same images and boxes, as globox's YOLO
    shutil.copytree(root / "images", yolo / "images")
    written.save_yolo_darknet(yolo / "labels", label_to_id={c: n for n, c in enumerate(CLASSES)})
    (yolo / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    again = await detection_project(api)
    assert (await imported(api, again, yolo))["label_problems"] == []
    from_yolo = await boxes_of(api, again)
    assert len(from_yolo) == 24 and {i: b for i, b in from_yolo.items() if i in boxes} == boxes

    health = (await api.get(f"{API}/datasets/{pid}/health")).json()["data"]
    assert health["boxes"]["total"] == total and health["boxes"]["negatives"] == 6
    assert sum(health["boxes"]["sizes"].values()) == total

    body = {"project_id": pid, "name": "main", "ratios": {"train": 0.5, "val": 0.25,
            "test": 0.25}, "seed": 1}  # fmt: skip
    split = await api.post(f"{API}/splits", json=body)
    assert split.status_code == 201, split.text
    split_id = split.json()["data"]["id"]
    for subset in ("val", "test"):  # every class has images in every subset
        shown = await boxes_of(api, pid, split_id=split_id, subset=subset)
        assert {box[0] for b in shown.values() for box in b} == set(CLASSES), subset

    for fmt, by_split in (("coco", split_id), ("yolo", None)):
        again, summary = await export_into(api, pid, fmt, stack, by_split)
        assert summary["images"] == 23 and summary["boxes"] == total and summary["left_out"] == []
        assert await boxes_of(api, again) == boxes, fmt


async def test_an_export_refuses_an_unknown_split_or_format(api, stack: Stack):
    pid = await detection_project(api)
    params = {"format": "coco", "split_id": "nosuch"}
    unknown = await api.get(f"{API}/datasets/{pid}/export", params=params)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    bad = await api.get(f"{API}/datasets/{pid}/export", params={"format": "voc"})
    assert bad.status_code == 422 and bad.json()["status"] == "error"


async def test_a_classification_dataset_exports_to_coco_but_not_to_yolo(api, stack: Stack):
    resp = await api.post(f"{API}/projects", json={"name": f"cls-{uuid.uuid4().hex[:8]}"})
    pid = resp.json()["data"]["id"]
    await imported(api, pid, imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 2, "b": 1}))
    yolo = await api.get(f"{API}/datasets/{pid}/export", params={"format": "yolo"})
    assert yolo.status_code == 422 and yolo.json()["error"]["field"] == "format"
    coco = await api.get(f"{API}/datasets/{pid}/export", params={"format": "coco"})
    doc = json.loads(zipfile.ZipFile(io.BytesIO(coco.content)).read("annotations/instances.json"))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert sorted(names[a["category_id"]] for a in doc["annotations"]) == ["a", "a", "b"]

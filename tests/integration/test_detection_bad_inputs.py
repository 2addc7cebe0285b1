"""Bad input of issue 16 over REST, against the running studio (projects and datasets, the
studio ``test_detection_data.py`` runs on): a YOLO ZIP with malformed lines, unknown class ids
and boxes of no size or outside the image imports the rest, its problems reported per file in
the import's report and not one box of a good image lost; a format without boxes given to a
detection project, local or uploaded, is a 422 naming ``format`` that starts nothing and
stores nothing; an export of another project's split is unknown; a cancel of a finished import
is a conflict.

Each answer is the error envelope ``{"status": "error", "error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from tests import imagesets
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
API = "/api/v1"

#: Label files of a YOLO set (classes: car, bike): the good ones and the bad ones, each bad
#: file's line and what the report says of it.
GOOD = {"g0": "0 0.5 0.5 0.25 0.25\n1 0.25 0.25 0.125 0.125\n", "g1": "1 0.5 0.5 0.5 0.5\n",
        "g2": ""}  # fmt: skip
BAD = {
    "malformed": ("0 0.5 0.5 0.25\n", "line 1"),
    "unknown_class": ("5 0.5 0.5 0.25 0.25\n", "class id 5"),
    "zero_size": ("0 0.5 0.5 0 0.25\n", "above 0"),
    "negative_size": ("1 0.5 0.5 0.25 -0.25\n", "line 1"),
    "outside": ("0 1.75 0.5 0.25 0.25\n", "outside 0-1"),
    "word": ("0 0.5 middle 0.25 0.25\n", "not a number"),
}


async def project(api: httpx.AsyncClient, task_type: str = "detection") -> str:
    body = {"name": f"bad-{uuid.uuid4().hex[:8]}", "task_type": task_type}
    resp = await api.post(f"{API}/projects", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


def yolo_zip(root: Path) -> Path:
    """A YOLO set of the good and bad label files above, zipped (images 32 x 32 px)."""
    root.mkdir(parents=True)
    out = root / "set.zip"
    with zipfile.ZipFile(out, "w") as archive:
        for n, (name, lines) in enumerate({**GOOD, **{k: v[0] for k, v in BAD.items()}}.items()):
            image = root / f"{name}.png"
            imagesets.noise(4_100 + n, 32).save(image)
            archive.write(image, f"images/{name}.png")
            archive.writestr(f"labels/{name}.txt", lines)
        archive.writestr("classes.txt", "car\nbike\n")
    return out


async def finished(api: httpx.AsyncClient, import_id: str) -> dict:
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        data = (await api.get(f"{API}/datasets/import/{import_id}")).json()["data"]
        if data["state"] in ("completed", "failed", "cancelled"):
            return dict(data)
        assert asyncio.get_running_loop().time() < deadline, data
        await asyncio.sleep(0.1)


def refused(resp: httpx.Response, status: int, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "error" and set(body["error"]) >= {"code", "message"}, body
    assert body["error"]["message"], body
    if field is not None:
        assert body["error"].get("field") == field, body
    return dict(body["error"])


async def test_a_yolo_zip_with_bad_lines_imports_the_rest_and_reports_each_file(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    # given a detection project and a YOLO ZIP of three good images and six bad label files
    pid = await project(api)
    archive = yolo_zip(stack.imports / uuid.uuid4().hex)
    # when it is uploaded
    with archive.open("rb") as f:
        files = {"file": ("set.zip", f, "application/zip")}
        resp = await api.post(f"{API}/datasets/import/upload", data={"project_id": pid},
                              files=files)  # fmt: skip
    assert resp.status_code == 202, resp.text
    done = await finished(api, resp.json()["data"]["id"])
    # then the good images are imported whole, each bad file reported with its line
    assert done["state"] == "completed", done
    report = done["report"]
    assert report["imported"] == len(GOOD) and report["format"] == "yolo", report
    problems = {p["file"]: p["reason"] for p in report["label_problems"]}
    assert set(problems) == {f"images/{name}.png" for name in BAD}, problems
    for name, (_, says) in BAD.items():
        assert f"labels/{name}.txt" in problems[f"images/{name}.png"], problems
        assert says in problems[f"images/{name}.png"], problems
    page = (await api.get(f"{API}/datasets/{pid}/images", params={"limit": 50})).json()["data"]
    boxes = {i["filename"].rsplit("/", 1)[-1]: len(i["boxes"] or []) for i in page["items"]}
    assert boxes == {"g0.png": 2, "g1.png": 1, "g2.png": 0}


async def test_a_format_without_boxes_is_refused_to_a_detection_project_and_stores_nothing(
    api: httpx.AsyncClient, stack: Stack, tmp_path: Path
) -> None:
    # given a detection project and a folder of class folders (no box in it)
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"car": 2, "bike": 2})
    # when it is imported from the server's disk, or uploaded as a ZIP
    body = {"project_id": pid, "path": str(root), "format": "auto"}
    local = await api.post(f"{API}/datasets/import/local", json=body)
    archive = tmp_path / "folder.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*.png")):
            z.write(path, path.relative_to(root).as_posix())
    with archive.open("rb") as f:
        uploaded = await api.post(f"{API}/datasets/import/upload", data={"project_id": pid},
                                  files={"file": ("folder.zip", f, "application/zip")})  # fmt: skip
    # then each is a 422 naming the format, and the project has no image and no import
    for resp in (local, uploaded):
        error = refused(resp, 422, "format")
        assert error["code"] == "INVALID_DATASET" and "COCO or YOLO" in error["message"]
    summary = (await api.get(f"{API}/datasets/{pid}")).json()["data"]
    assert summary["images"] == 0, summary


async def test_an_export_of_another_projects_split_is_unknown(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    # given two projects, a split of the first
    first = await project(api, "classification")
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 3, "b": 3})
    body = {"project_id": first, "path": str(root), "format": "auto"}
    resp = await api.post(f"{API}/datasets/import/local", json=body)
    assert resp.status_code == 202, resp.text
    import_id = resp.json()["data"]["id"]
    assert (await finished(api, import_id))["state"] == "completed"
    # (a cancel of the finished import is a conflict that says so, whichever instance hears it)
    late = await api.post(f"{API}/datasets/import/{import_id}/cancel")
    assert "has already completed" in refused(late, 409)["message"]
    ratios = {"train": 0.5, "val": 0.5}
    split = await api.post(f"{API}/splits", json={"project_id": first, "name": "s",
                                                  "ratios": ratios, "seed": 1})  # fmt: skip
    assert split.status_code == 201, split.text
    other = await project(api)
    # when the second project's dataset is exported by the first's split, then it is unknown
    params = {"format": "coco", "split_id": split.json()["data"]["id"]}
    error = refused(await api.get(f"{API}/datasets/{other}/export", params=params), 404)
    assert error["code"] == "NOT_FOUND"

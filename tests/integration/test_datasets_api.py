"""Datasets over REST against the running studio: imports in four formats, browsing, splits."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from pathlib import Path

import httpx
import nats
import pytest
from PIL import Image

from contracts import new_id
from contracts import training as t
from tests import imagesets
from tests.stack import Stack
from tests.stream_helpers import Runs
from tests.upload_objects import handed_over_now

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the stack starts only these (and the gateway).
STACK_SERVICES = ("projects", "datasets")

API = "/api/v1"


async def project(api: httpx.AsyncClient) -> str:
    resp = await api.post(f"{API}/projects", json={"name": f"ds-{uuid.uuid4().hex[:8]}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


async def finished(api: httpx.AsyncClient, job: dict, timeout: float = 60) -> dict:
    """Poll the job until it is over (its SSE stream is tested on its own)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        data = (await api.get(f"{API}/datasets/import/{job['id']}")).json()["data"]
        if data["state"] in ("completed", "failed", "cancelled"):
            return data
        assert asyncio.get_running_loop().time() < deadline, data
        await asyncio.sleep(0.1)


async def import_local(api: httpx.AsyncClient, pid: str, path: Path, fmt: str = "auto") -> dict:
    resp = await api.post(
        f"{API}/datasets/import/local", json={"project_id": pid, "path": str(path), "format": fmt}
    )
    assert resp.status_code == 202, resp.text
    return await finished(api, resp.json()["data"])


async def upload(
    api: httpx.AsyncClient, pid: str, archive: Path, fmt: str = "auto"
) -> httpx.Response:
    with archive.open("rb") as fh:
        return await api.post(
            f"{API}/datasets/import/upload",
            data={"project_id": pid, "format": fmt},
            files={"file": (archive.name, fh, "application/zip")},
        )


async def images(api: httpx.AsyncClient, pid: str, **params: object) -> list[dict]:
    out: list[dict] = []
    cursor = None
    while True:
        query = {"limit": 3, **params, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(f"{API}/datasets/{pid}/images", params=query)).json()["data"]
        out += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text
    return resp.json()["error"]


async def test_a_folder_imports_from_a_server_path_with_an_exact_report(api, stack: Stack):
    # given a folder dataset with a duplicate, a corrupt file and a text file
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"cat": 4, "dog": 3})
    (root / "cat" / "copy.png").write_bytes((root / "dog" / "dog_0.png").read_bytes())
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "dog" / "notes.txt").write_text("hello")
    # when it is imported
    job = await import_local(api, pid, root)
    # then the report names every file's fate
    assert job["state"] == "completed", job
    report = job["report"]
    assert report["format"] == "folder"
    assert report["imported"] == 7
    assert [d["file"] for d in report["duplicates"]] == ["dog/dog_0.png"]
    assert report["duplicates"][0]["kept_label"] == "cat"
    assert [p["file"] for p in report["corrupt"]] == ["dog/broken.png"]
    assert [p["file"] for p in report["skipped"]] == ["dog/notes.txt"]
    summary = (await api.get(f"{API}/datasets/{pid}")).json()["data"]
    assert summary["images"] == 7
    # cat/copy.png comes first by name, so it is the one kept; dog/dog_0.png is the duplicate
    assert summary["classes"] == {"cat": 5, "dog": 2}
    assert summary["width"] == {"min": 32, "max": 32, "mean": 32.0}


async def test_browse_pages_filters_and_serves_images_and_thumbnails(api, stack: Stack):
    pid = await project(api)
    await import_local(
        api, pid, imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 4, "b": 3})
    )
    listed = await images(api, pid)
    assert len(listed) == 7
    assert [i["filename"] for i in listed] == sorted(i["filename"] for i in listed)
    assert {i["label"] for i in await images(api, pid, label="b")} == {"b"}
    assert [i["filename"] for i in await images(api, pid, q="a_1")] == ["a/a_1.png"]
    first = listed[0]
    resp = await api.get(f"{API}/datasets/{pid}/image/{first['id']}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["etag"] == f'"{first["id"]}"'
    again = await api.get(
        f"{API}/datasets/{pid}/image/{first['id']}", headers={"If-None-Match": resp.headers["etag"]}
    )
    assert again.status_code == 304
    thumb = await api.get(f"{API}/datasets/{pid}/thumbnail/{first['id']}")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 32)
    error(await api.get(f"{API}/datasets/{pid}/image/{'0' * 64}"), 404, "NOT_FOUND")
    error(await api.get(f"{API}/datasets/{pid}/image/..%2F..%2Fetc%2Fpasswd"), 404, "NOT_FOUND")
    error(
        await api.get(f"{API}/datasets/{pid}/images", params={"limit": 501}),
        422,
        "VALIDATION_ERROR",
    )
    error(
        await api.get(f"{API}/datasets/{pid}/images", params={"cursor": "!!"}),
        422,
        "VALIDATION_ERROR",
    )


@pytest.mark.parametrize("fmt", ["folder", "csv", "coco", "yolo"])
async def test_each_format_imports_from_a_zip_upload(api, stack: Stack, tmp_path: Path, fmt):
    pid = await project(api)
    src = tmp_path / "src"
    if fmt == "folder":
        imagesets.folder(src, {"x": 2, "y": 2})
    elif fmt == "csv":
        imagesets.csv_set(src, [("1.png", "x"), ("2.png", "x"), ("3.png", "y"), ("4.png", "y")])
    elif fmt == "coco":
        imagesets.coco_set(src, ["x", "x", "y", "y"])
    else:
        imagesets.yolo_set(src, [0, 0, 1, 1], ["x", "y"])
    resp = await upload(api, pid, imagesets.zip_dir(src, tmp_path / "data.zip"))
    assert resp.status_code == 202, resp.text
    job = await finished(api, resp.json()["data"])
    assert job["state"] == "completed", job
    assert job["report"]["format"] == fmt
    summary = (await api.get(f"{API}/datasets/{pid}")).json()["data"]
    assert summary["classes"] == {"x": 2, "y": 2}
    if fmt in ("coco", "yolo"):  # boxes are kept for detection later
        assert all(i["boxes"] for i in await images(api, pid))


async def test_a_raw_zip_body_imports_too(api, tmp_path: Path):
    pid = await project(api)
    archive = imagesets.zip_dir(imagesets.folder(tmp_path / "s", {"x": 2}), tmp_path / "a.zip")
    resp = await api.post(
        f"{API}/datasets/import/upload",
        params={"project_id": pid},
        content=archive.read_bytes(),
        headers={"content-type": "application/zip"},
    )
    assert resp.status_code == 202, resp.text
    assert (await finished(api, resp.json()["data"]))["report"]["imported"] == 2


async def test_a_second_import_adds_and_reports_images_already_there(api, stack: Stack):
    pid = await project(api)
    first = imagesets.folder(stack.imports / uuid.uuid4().hex, {"x": 3})
    await import_local(api, pid, first)
    second = imagesets.folder(stack.imports / uuid.uuid4().hex, {"x": 1, "y": 2}, start=2)
    job = await import_local(api, pid, second)
    # seed 2 is x_2 of the first import: the same bytes, reported and not added twice
    assert [d["file"] for d in job["report"]["duplicates"]] == ["x/x_0.png"]
    assert (await api.get(f"{API}/datasets/{pid}")).json()["data"]["classes"] == {"x": 3, "y": 2}


def zip_with(
    tmp_path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED
) -> Path:
    archive = tmp_path / f"{uuid.uuid4().hex}.zip"
    with zipfile.ZipFile(archive, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return archive


BAD_UPLOADS = {
    "zip slip": ({"../evil.png": b"x", "a/b.png": b"y"}, 422, "UNSAFE_ARCHIVE"),
    "absolute path": ({"/tmp/evil.png": b"x"}, 422, "UNSAFE_ARCHIVE"),
    "zip bomb": ({"a/bomb.png": b"\0" * 30_000_000}, 422, "ZIP_BOMB"),
    "empty": ({}, 422, "EMPTY_ARCHIVE"),
    "bad coco json": ({"instances.json": b"{not json", "images/a.png": b"x"}, 422, "INVALID_JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
async def test_bad_archives_get_a_clear_4xx_and_change_nothing(api, tmp_path: Path, case):
    pid = await project(api)
    entries, status, code = BAD_UPLOADS[case]
    archive = zip_with(tmp_path, entries, zipfile.ZIP_DEFLATED)
    error(await upload(api, pid, archive), status, code)
    assert (await api.get(f"{API}/datasets/{pid}")).json()["data"]["images"] == 0


async def test_a_file_that_is_not_a_zip_is_refused(api, tmp_path: Path):
    pid = await project(api)
    not_zip = tmp_path / "photo.zip"
    imagesets.write(not_zip, 1, "PNG")
    error(await upload(api, pid, not_zip), 415, "NOT_A_ZIP")


async def test_bad_annotations_are_refused_whole(api, stack: Stack, tmp_path: Path):
    pid = await project(api)
    coco = imagesets.coco_set(tmp_path / "coco", ["x", "y"])
    doc = (coco / "instances.json").read_text().replace('"category_id": 2', '"category_id": 9')
    (coco / "instances.json").write_text(doc)
    error(
        await upload(api, pid, imagesets.zip_dir(coco, tmp_path / "c.zip")), 422, "UNKNOWN_CATEGORY"
    )
    yolo = imagesets.yolo_set(tmp_path / "yolo", [0, 5], ["x", "y"])
    error(
        await upload(api, pid, imagesets.zip_dir(yolo, tmp_path / "y.zip")),
        422,
        "LABEL_OUT_OF_RANGE",
    )
    (yolo / "labels" / "img1.txt").write_text("1 1.5 0.5 0.2 0.2\n")
    error(
        await upload(api, pid, imagesets.zip_dir(yolo, tmp_path / "y2.zip")),
        422,
        "LABEL_OUT_OF_RANGE",
    )
    csv = imagesets.csv_set(tmp_path / "csv", [("a.png", "x")])
    with (csv / "labels.csv").open("a") as fh:
        fh.write("images/missing.png,y\n")
    error(await upload(api, pid, imagesets.zip_dir(csv, tmp_path / "s.zip")), 422, "MISSING_FILES")
    coco2 = imagesets.coco_set(tmp_path / "coco2", ["x"])
    (coco2 / "images" / "img0.png").unlink()
    imagesets.write(coco2 / "images" / "other.png", 5)
    error(
        await upload(api, pid, imagesets.zip_dir(coco2, tmp_path / "c2.zip")), 422, "MISSING_FILES"
    )
    assert (await api.get(f"{API}/datasets/{pid}")).json()["data"]["images"] == 0


async def test_server_paths_outside_the_allowed_roots_are_refused(
    api, stack: Stack, tmp_path: Path
):
    pid = await project(api)
    outside = imagesets.folder(tmp_path / "outside", {"x": 1})
    body = {"project_id": pid, "path": str(outside)}
    error(await api.post(f"{API}/datasets/import/local", json=body), 403, "PATH_NOT_ALLOWED")
    link = stack.imports / f"link-{uuid.uuid4().hex}"
    link.symlink_to(outside)
    body = {"project_id": pid, "path": str(link)}
    error(await api.post(f"{API}/datasets/import/local", json=body), 403, "PATH_NOT_ALLOWED")
    body = {"project_id": pid, "path": str(stack.imports / "nope")}
    error(await api.post(f"{API}/datasets/import/local", json=body), 404, "NOT_FOUND")
    body = {"project_id": "0" * 32, "path": str(stack.imports)}
    error(await api.post(f"{API}/datasets/import/local", json=body), 404, "NOT_FOUND")
    body = {"project_id": pid, "path": str(stack.imports), "format": "tiff"}
    error(await api.post(f"{API}/datasets/import/local", json=body), 422, "VALIDATION_ERROR")


async def test_relabel_and_delete_an_image(api, stack: Stack):
    pid = await project(api)
    await import_local(api, pid, imagesets.folder(stack.imports / uuid.uuid4().hex, {"x": 2}))
    image = (await images(api, pid))[0]
    resp = await api.patch(f"{API}/datasets/{pid}/images/{image['id']}", json={"label": "z"})
    assert resp.json()["data"]["label"] == "z"
    error(
        await api.patch(f"{API}/datasets/{pid}/images/{image['id']}", json={"label": ""}),
        422,
        "VALIDATION_ERROR",
    )
    assert (await api.delete(f"{API}/datasets/{pid}/images/{image['id']}")).status_code == 204
    assert [i["id"] for i in await images(api, pid)] != [image["id"]]
    assert len(await images(api, pid)) == 1
    error(await api.delete(f"{API}/datasets/{pid}/images/{image['id']}"), 404, "NOT_FOUND")


async def test_health_reports_duplicates_near_duplicates_and_imbalance(api, stack: Stack):
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"big": 6, "small": 1})
    (root / "small" / "twin.png").write_bytes((root / "big" / "big_0.png").read_bytes())
    near = imagesets.noise(0)
    near.save(root / "small" / "near.jpg", "JPEG", quality=95)
    (root / "small" / "bad.png").write_bytes(b"garbage")
    await import_local(api, pid, root)
    report = (await api.get(f"{API}/datasets/{pid}/health")).json()["data"]
    assert report["exact_duplicates"][0]["label_conflict"] is True
    assert any(len(g["group"]) == 2 for g in report["near_duplicates"])
    assert report["corrupt"][0]["filename"] == "small/bad.png"
    assert report["imbalance"]["largest"] == "big"
    assert report["warnings"]


async def test_splits_are_stratified_seeded_and_leak_free(api, stack: Stack):
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 10, "b": 10})
    imagesets.noise(3).save(root / "b" / "near_a3.jpg", "JPEG", quality=95)  # near-duplicate of a_3
    await import_local(api, pid, root)
    body = {
        "project_id": pid,
        "name": "main",
        "ratios": {"train": 0.6, "val": 0.2, "test": 0.2},
        "seed": 7,
    }
    resp = await api.post(f"{API}/splits", json=body)
    assert resp.status_code == 201, resp.text
    split = resp.json()["data"]
    assert split["images"] == 21
    assert split["counts"]["val"]["a"] == 2
    again = await api.post(f"{API}/splits", json={**body, "name": "same again"})
    assert again.json()["data"]["recipe_hash"] == split["recipe_hash"]
    other = await api.post(f"{API}/splits", json={**body, "name": "other seed", "seed": 8})
    assert other.json()["data"]["recipe_hash"] != split["recipe_hash"]
    subsets = {}
    for subset in ("train", "val", "test"):
        for image in await images(api, pid, split_id=split["id"], subset=subset):
            subsets[image["filename"]] = subset
    assert len(subsets) == 21
    assert subsets["a/a_3.png"] == subsets["b/near_a3.jpg"]
    error(await api.post(f"{API}/splits", json=body), 409, "CONFLICT")
    listed = (await api.get(f"{API}/splits", params={"project_id": pid})).json()["data"]["items"]
    assert [s["name"] for s in listed] == ["main", "same again", "other seed"]


@pytest.mark.parametrize(
    ("ratios", "field"),
    [
        ({"train": 0.6, "val": 0.3, "test": 0.3}, "ratios"),
        ({"train": 1.2, "val": 0, "test": 0}, "ratios.train"),
        ({"train": 0.98, "val": 0.01, "test": 0.01}, "ratios"),
    ],
)
async def test_bad_split_ratios_get_422(api, stack: Stack, ratios, field):
    pid = await project(api)
    await import_local(
        api, pid, imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 3, "b": 3})
    )
    resp = await api.post(f"{API}/splits", json={"project_id": pid, "name": "s", "ratios": ratios})
    assert error(resp, 422, "VALIDATION_ERROR")["field"] == field


async def test_import_progress_streams_over_sse_until_complete(api, stack: Stack):
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 30})
    resp = await api.post(
        f"{API}/datasets/import/local", json={"project_id": pid, "path": str(root)}
    )
    job = resp.json()["data"]
    names = []
    async with api.stream("GET", f"{API}/datasets/import/{job['id']}/stream") as sse:
        async for line in sse.aiter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
    assert names[0] == "status"
    assert names[-1] == "complete"


BAD_ID = "%C3%A9t%C3%A9"  # "été": not an id (the kernel's rule is ASCII letters, digits, - and _)


async def test_malformed_ids_in_paths_get_404_and_never_reach_the_service(api, stack: Stack):
    pid = await project(api)
    image = "0" * 64
    for call in (
        api.get(f"{API}/datasets/{BAD_ID}"),
        api.get(f"{API}/datasets/{BAD_ID}/images"),
        api.get(f"{API}/datasets/{BAD_ID}/health"),
        api.get(f"{API}/datasets/{pid}/image/{BAD_ID}"),
        api.get(f"{API}/datasets/{pid}/thumbnail/{BAD_ID}"),
        api.patch(f"{API}/datasets/{BAD_ID}/images/{image}", json={"label": "x"}),
        api.patch(f"{API}/datasets/{pid}/images/{BAD_ID}", json={"label": "x"}),
        api.delete(f"{API}/datasets/{pid}/images/{BAD_ID}"),
        api.get(f"{API}/datasets/import/{BAD_ID}"),
        api.post(f"{API}/datasets/import/{BAD_ID}/cancel"),
        api.get(f"{API}/splits/{BAD_ID}"),
    ):
        error(await call, 404, "NOT_FOUND")
    assert "invalid aggregate id" not in stack.log("datasets")


async def test_malformed_ids_in_bodies_and_queries_get_422_naming_the_field(
    api, stack: Stack, tmp_path: Path
):
    # a non-ASCII project_id used to reach the datasets service: 500 "CreateSplit failed"
    ratios = {"train": 0.5, "val": 0.5}
    split = {"project_id": "été", "name": "s", "ratios": ratios}
    assert (
        error(await api.post(f"{API}/splits", json=split), 422, "VALIDATION_ERROR")["field"]
        == "project_id"
    )
    local = {"project_id": "a.b", "path": str(stack.imports)}
    assert (
        error(await api.post(f"{API}/datasets/import/local", json=local), 422, "VALIDATION_ERROR")[
            "field"
        ]
        == "project_id"
    )
    # a multipart form field, and the same as a query parameter
    archive = imagesets.zip_dir(imagesets.folder(tmp_path / "f", {"x": 1}), tmp_path / "f.zip")
    for bad in ("été", "a b", "x" * 129):
        assert (
            error(await upload(api, bad, archive), 422, "VALIDATION_ERROR")["field"] == "project_id"
        )
        resp = await api.post(
            f"{API}/datasets/import/upload",
            params={"project_id": bad},
            content=archive.read_bytes(),
        )
        assert error(resp, 422, "VALIDATION_ERROR")["field"] == "project_id"
    resp = await api.get(f"{API}/splits", params={"project_id": "été"})
    assert error(resp, 422, "VALIDATION_ERROR")["field"] == "project_id"
    pid = await project(api)
    resp = await api.get(f"{API}/datasets/{pid}/images", params={"split_id": "a/b"})
    assert error(resp, 422, "VALIDATION_ERROR")["field"] == "split_id"
    assert "invalid aggregate id" not in stack.log("datasets")
    assert not list((stack.workspace / "uploads").glob("*.zip"))  # refused uploads are not kept
    assert await handed_over_now(stack.nats_url) == []  # nor handed over


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("a" * 300, 404, "NOT_FOUND"),  # ENAMETOOLONG
        ("a\x00b", 422, "VALIDATION_ERROR"),  # a NUL byte
        ("x" * 5000, 422, "VALIDATION_ERROR"),  # longer than any path
    ],
)
async def test_server_paths_the_file_system_refuses_get_a_4xx(
    api, stack: Stack, path, status, code
):
    pid = await project(api)
    body = {"project_id": pid, "path": path}
    assert (
        error(await api.post(f"{API}/datasets/import/local", json=body), status, code)["field"]
        == "path"
    )


async def test_a_path_through_a_file_gets_a_4xx(api, stack: Stack):
    pid = await project(api)
    a_file = stack.imports / f"file-{uuid.uuid4().hex}.txt"
    a_file.write_text("not a folder")
    body = {"project_id": pid, "path": str(a_file / "below")}  # ENOTDIR
    error(await api.post(f"{API}/datasets/import/local", json=body), 404, "NOT_FOUND")


async def test_a_split_forced_off_its_ratios_by_a_group_says_so(api, stack: Stack):
    # given class "a" with one scene saved eight times (re-encoded, resized: a group of
    # near-duplicates that may not straddle subsets) and four other images, class "b" of twelve
    pid = await project(api)
    root = imagesets.squares(stack.imports / uuid.uuid4().hex, per_class=12)
    scene = Image.open(root / "tl" / "tl_0.png").convert("RGB")
    for i, quality in enumerate((60, 70, 80, 90, 95)):
        scene.save(root / "tl" / f"copy_{i}.jpg", "JPEG", quality=quality)
    for i, size in enumerate((48, 64, 96)):
        scene.resize((size, size)).save(root / "tl" / f"bigger_{i}.png")
    for i in range(4, 12):
        (root / "tl" / f"tl_{i}.png").unlink()
    await import_local(api, pid, root)
    # when it is split half and half
    body = {"project_id": pid, "name": "halves", "ratios": {"train": 0.5, "val": 0.5}}
    resp = await api.post(f"{API}/splits", json=body)
    # then the group kept together pushes "tl" off its share, and the split says so and why
    assert resp.status_code == 201, resp.text
    split = resp.json()["data"]
    off = [d for d in split["deviations"] if d["label"] == "tl"]
    assert off, split
    assert all(abs(d["actual"] - d["expected"]) > 2 for d in off)
    assert "near-duplicates" in off[0]["reason"]
    assert not [d for d in split["deviations"] if d["label"] == "br"]
    # and reading the split back shows the same
    got = (await api.get(f"{API}/splits/{split['id']}")).json()["data"]
    assert got["deviations"] == split["deviations"]


async def test_an_import_and_a_relabel_carry_the_clients_trace_into_their_events(api, stack):
    # given a client with a trace of its own
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 2, "b": 2})
    # when it imports (a background job) and relabels an image
    resp = await api.post(
        f"{API}/datasets/import/local",
        json={"project_id": pid, "path": str(root)},
        headers=headers,
    )
    assert resp.status_code == 202, resp.text
    await finished(api, resp.json()["data"])
    image = (await images(api, pid))[0]
    relabel = await api.patch(
        f"{API}/datasets/{pid}/images/{image['id']}", json={"label": "b"}, headers=headers
    )
    assert relabel.status_code == 200, relabel.text
    # then every event it caused, the job's outcome included, is part of that trace
    nc = await nats.connect(stack.nats_url)
    try:
        sub = await nc.jetstream().subscribe(f"evt.datasets.{pid}", ordered_consumer=True)
        traces: dict[str, str] = {}
        pending = 1
        while pending:
            msg = await sub.next_msg(timeout=5)
            traces[msg.headers["Studio-Event-Type"]] = msg.headers["traceparent"].split("-")[1]
            pending = msg.metadata.num_pending
    finally:
        await nc.close()
    assert set(traces) >= {
        "datasets.import_started.v1",
        "datasets.images_added.v1",
        "datasets.import_completed.v1",
        "datasets.image_relabeled.v1",
    }, traces
    assert set(traces.values()) == {trace_id}


async def split_of(api: httpx.AsyncClient, stack: Stack, pid: str) -> tuple[dict, dict]:
    """A split "s" of ten fresh images of the project: its body as sent, and the split."""
    await import_local(
        api, pid, imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 5, "b": 5})
    )
    body = {"project_id": pid, "name": "s", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}}
    return body, (await api.post(f"{API}/splits", json=body)).json()["data"]


async def test_an_unused_split_can_be_deleted_and_its_name_reused(api, stack: Stack):
    # given a project with a split
    pid = await project(api)
    body, split = await split_of(api, stack, pid)
    # when it is deleted (through the short alias too, as every route)
    resp = await api.delete(f"/api/splits/{split['id']}")
    # then it is gone from reads and lists, and its name may be given again
    assert resp.status_code == 204, resp.text
    error(await api.get(f"{API}/splits/{split['id']}"), 404, "NOT_FOUND")
    listed = (await api.get(f"{API}/splits", params={"project_id": pid})).json()["data"]
    assert listed["items"] == []
    again = await api.post(f"{API}/splits", json=body)
    assert again.status_code == 201, again.text
    # and a split deleted already, or an id that names nothing, is not found
    error(await api.delete(f"{API}/splits/{split['id']}"), 404, "NOT_FOUND")
    error(await api.delete(f"{API}/splits/{BAD_ID}"), 404, "NOT_FOUND")


async def test_a_split_a_run_uses_cannot_be_deleted(api, stack: Stack):
    # given a split, and a run queued on it (written as the trainer would: no training needed)
    pid = await project(api)
    _, split = await split_of(api, stack, pid)
    nc, runs = await Runs.connect(stack.nats_url)
    try:
        run_id = new_id()
        queued = t.RunQueued(
            run_id=run_id,
            experiment_id=new_id(),
            project_id=pid,
            split_id=split["id"],
            hyperparameters=t.Hyperparameters(epochs=1),
            classes=["a", "b"],
            train_images=6,
            val_images=2,
        )
        await runs.add(run_id, queued)
    finally:
        await nc.close()
    for _ in range(100):  # until the gateway has read the run
        if (await api.get(f"{API}/runs/{run_id}")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    # when it is deleted, then it is refused, naming how many runs use it, and it stays
    resp = await api.delete(f"{API}/splits/{split['id']}")
    assert "used by 1 run" in error(resp, 409, "CONFLICT")["message"]
    assert (await api.get(f"{API}/splits/{split['id']}")).status_code == 200

"""REST: a dataset exported as COCO or YOLO, ``GET /datasets/{id}/export?format=coco|yolo``
(``&split_id=``: only that split's images, one folder and annotation file per subset).

The images and their boxes are read from the gateway's read model (what the browse API shows),
their bytes through the ``Blobs`` port, and the ZIP (``dataset_export``) is streamed as it is
written: each image as it arrives, then the annotation files, then ``export.json`` (what was
exported, and any image deleted while the export ran, left out). Refusals (no access, a bad
format, an unknown split, YOLO for a classification dataset, which it cannot hold) come
before the first byte, as error envelopes. Imports the
gateway's own modules and ``contracts``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from contracts import common
from services.gateway.access import require
from services.gateway.api.params import MaybeQueryId, PathId
from services.gateway.blobs import blobs_of
from services.gateway.dataset_export import (
    ExportImage,
    Layout,
    ZipStream,
    annotation_files,
    classes_of,
    image_path,
)
from services.gateway.envelope import ERROR_RESPONSES, ApiError
from services.gateway.readmodels.datasets import lean
from services.kernel.sqlite import Reader

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=ERROR_RESPONSES)
#: Image rows read from the read model at a time.
PAGE = 1000


@router.get("/{project_id}/export", response_class=StreamingResponse)
async def export_dataset(
    project_id: PathId,
    request: Request,
    format: Literal["coco", "yolo"],
    split_id: MaybeQueryId = None,
) -> StreamingResponse:
    """The dataset (or one split of it) as a ZIP of COCO or YOLO files and its images."""
    await require(request, project_id, "viewer")
    reader: Reader = request.app.state.reader
    if split_id is not None:
        found = reader.one("SELECT dataset_id FROM splits WHERE split_id = ?", (split_id,))
        if found is None or found[0] != project_id:
            message = f"split {split_id} does not exist in this dataset"
            raise ApiError(common.NOT_FOUND, message, field="split_id")
    images = _images(reader, project_id, split_id)
    if format == "yolo" and any(image.label and not image.boxes for image in images):
        task = reader.one("SELECT task_type FROM projects WHERE id = ?", (project_id,))
        if task is None or task[0] != "detection":
            message = (
                "YOLO files carry boxes only, and images of this dataset have a label but no "
                "box: export it as COCO, which keeps their labels"
            )
            raise ApiError(common.VALIDATION_ERROR, message, field="format")
    name = f"{project_id}-{format}{f'-{split_id}' if split_id else ''}.zip"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    body = _zip(request, project_id, format, split_id, images)
    return StreamingResponse(body, media_type="application/zip", headers=headers)


def _images(reader: Reader, dataset_id: str, split_id: str | None) -> list[ExportImage]:
    """Every image of the dataset (of the split), in file name order, with its subset."""
    images: list[ExportImage] = []
    after: tuple[str, str] | None = None
    while True:
        page = lean.image_page(reader, dataset_id=dataset_id, limit=PAGE, after=after,
                               split_id=split_id)  # fmt: skip
        subsets: dict[str, str] = {}
        if split_id is not None:
            ids = [item["id"] for item in page.items]
            subsets = lean.subsets_seen(reader, split_id=split_id, image_ids=ids)
        images += [_image(item, subsets.get(item["id"])) for item in page.items]
        if not page.more:
            return images
        after = (page.items[-1]["filename"], page.items[-1]["id"])


def _image(item: dict[str, Any], subset: str | None) -> ExportImage:
    return ExportImage(
        image_id=item["id"],
        filename=item["filename"],
        label=item["label"],
        width=item["width"],
        height=item["height"],
        format=item["format"],
        boxes=item["boxes"] or [],
        subset=subset,
    )


async def _zip(
    request: Request, dataset_id: str, fmt: str, split_id: str | None, images: list[ExportImage]
) -> AsyncIterator[bytes]:
    archive, layout, blobs = ZipStream(), Layout(), blobs_of(request)
    placed: list[tuple[ExportImage, str]] = []
    missing: list[str] = []
    for image in images:
        try:
            blob = await blobs.image(request, dataset_id, image.image_id, "image")
        except ApiError:  # deleted (or its file lost) since the export began
            missing.append(image.filename)
            continue
        name = layout.name(image)
        with archive.open(image_path(name, image.subset)) as entry:
            async for chunk in blob.chunks:
                entry.write(chunk)
                yield archive.take()
        yield archive.take()
        placed.append((image, name))
    classes = classes_of(image for image, _ in placed)
    for path, data in annotation_files(fmt, placed, classes):
        yield archive.add(path, data)
    summary = {
        "format": fmt,
        "dataset_id": dataset_id,
        "split_id": split_id,
        "images": len(placed),
        "boxes": sum(len(image.boxes) for image, _ in placed),
        "classes": classes,
        "left_out": [{"filename": f, "reason": "deleted during the export"} for f in missing],
    }
    yield archive.add("export.json", json.dumps(summary, indent=2).encode())
    yield archive.close()

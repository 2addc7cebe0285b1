"""The images of ``POST /export/{id}/predict`` as the gateway reads them from its multipart
body, a classifier's or a detector's alike: more images than one prediction takes, more form
fields than it allows, no image, or a body over the byte cap are each a 4xx with a code, a
message and the field, before anything is sent to the exporter. In process: a Starlette request
as the app hands it to the route (``"app"`` in its scope).
"""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

from contracts import exports as x
from services.gateway.api.exports import PREDICT_MAX_BYTES, PREDICT_MAX_FIELDS, _images
from services.gateway.envelope import ApiError


def request_of(
    files: int, fields: int = 0, size: int = 8, content_length: int | None = None
) -> Request:
    parts = [("file", (f"{i}.png", b"x" * size, "image/png")) for i in range(files)]
    built = httpx.Request("POST", "http://studio/predict", files=parts or None,
                          data={f"f{i}": "v" for i in range(fields)} or None)  # fmt: skip
    body = built.read()
    headers = {k.lower(): v for k, v in built.headers.items()}
    if content_length is not None:
        headers["content-length"] = str(content_length)
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "app": None,
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def test_as_many_images_as_one_prediction_takes_are_read() -> None:
    assert len(await _images(request_of(x.PREDICT_MAX_IMAGES))) == x.PREDICT_MAX_IMAGES


@pytest.mark.parametrize(
    ("request_args", "status", "code", "says"),
    [
        ({"files": x.PREDICT_MAX_IMAGES + 1}, 422, "VALIDATION_ERROR",
         f"Maximum number of files is {x.PREDICT_MAX_IMAGES}"),
        ({"files": 1, "fields": PREDICT_MAX_FIELDS + 1}, 422, "VALIDATION_ERROR",
         f"Maximum number of fields is {PREDICT_MAX_FIELDS}"),
        ({"files": 0, "fields": 1}, 422, "VALIDATION_ERROR", "send one or more images"),
        ({"files": 1, "content_length": PREDICT_MAX_BYTES + 1}, 413, "PAYLOAD_TOO_LARGE",
         "at most 6 MB"),
        ({"files": 2, "size": PREDICT_MAX_BYTES // 2 + 1}, 413, "PAYLOAD_TOO_LARGE",
         "at most 6 MB"),
    ],
)  # fmt: skip
async def test_a_bad_prediction_body_is_a_4xx_naming_why(
    request_args: dict[str, int], status: int, code: str, says: str
) -> None:
    with pytest.raises(ApiError) as refused:
        await _images(request_of(**request_args))
    error = refused.value
    assert (error.status, error.code) == (status, code)
    assert says in error.message, error.message
    if status == 422:
        assert error.field == "file"

"""``follow`` (SSE through reconnects: Last-Event-ID sent, no repeat, ends at its end),
streamed uploads and verified downloads, and the package's one rule: it imports nothing of
the studio's services or contracts."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from python_multipart import MultipartParser

from studio_client import ChecksumMismatch, NotFound, RetryPolicy, StreamEnded, StudioClient
from studio_client.files import multipart_upload
from studio_client.streams import parse

FAST = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002)


def sse(*events: tuple[str, int | None, str]) -> bytes:
    out = b""
    for name, seq, data in events:
        out += (f"id: {seq}\n" if seq is not None else "").encode()
        out += f"event: {name}\ndata: {data}\n\n".encode()
    return out


def studio(handler: object) -> StudioClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return StudioClient("http://s", token="t", retry=FAST, transport=transport)


def test_the_parser_reads_names_ids_multiline_data_and_skips_comments():
    lines = [": keepalive", "", "id: 7", "event: epoch_end", 'data: {"epoch":', "data: 1}", ""]
    lines += ["event: progress", 'data: {"batch": 3}', ""]
    events = parse(lines)
    assert [(e.event, e.id, e.data) for e in events] == [
        ("epoch_end", 7, {"epoch": 1}),
        ("progress", None, {"batch": 3}),  # no id of its own: not a repeat of 7
    ]


def test_follow_resumes_after_the_last_id_and_never_repeats_one():
    # given a stream that breaks after epoch 1, then (asked with Last-Event-ID) replays 11
    asked: list[str | None] = []
    bodies = [
        sse(("status", 10, "{}"), ("epoch_end", 11, '{"epoch": 1}'), ("progress", None, "{}")),
        sse(("epoch_end", 11, '{"epoch": 1}'), ("epoch_end", 12, '{"epoch": 2}')),
        sse(("complete", 13, '{"status": "completed"}'), ("epoch_end", 14, '{"epoch": 9}')),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        body = bodies[len(asked) - 1]
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    # when the run is followed
    with studio(handler) as s:
        events = list(s.runs.follow("r1"))

    # then each stored event came once, in order, and nothing after complete
    assert [(e.event, e.id) for e in events] == [
        ("status", 10),
        ("epoch_end", 11),
        ("progress", None),
        ("epoch_end", 12),
        ("complete", 13),
    ]
    assert asked == [None, "11", "12"]


def test_follow_rides_out_503s_and_lost_connections_and_stops_at_204():
    answers: list[object] = [
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"status": "error", "error": {"code": "UNAVAILABLE"}}),
        httpx.Response(200, content=sse(("epoch_end", 5, '{"epoch": 1}'))),
        httpx.Response(204),  # the gateway: you have the end already
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    with studio(handler) as s:
        assert [e.id for e in s.runs.follow("r1")] == [5]
    assert not answers


def test_follow_raises_a_refusal_and_a_closed_stream():
    missing = {"code": "NOT_FOUND", "message": "run r1 does not exist"}
    gone = {"status": "error", "error": missing, "request_id": "q"}
    with studio(lambda r: httpx.Response(404, json=gone)) as s, pytest.raises(NotFound):
        list(s.runs.follow("r1"))
    closed = sse(("closed", None, '{"code": "UNAUTHENTICATED", "message": "signed out"}'))
    with (
        studio(lambda r: httpx.Response(200, content=closed)) as s,
        pytest.raises(StreamEnded) as ended,
    ):
        list(s.imports.follow("i1"))
    assert ended.value.code == "UNAUTHENTICATED"


def test_a_download_whose_bytes_do_not_match_the_header_writes_nothing(tmp_path: Path):
    model = b"onnx model bytes" * 1000
    good = hashlib.sha256(model).hexdigest()

    def handler(request: httpx.Request) -> httpx.Response:
        body = model if "good" in request.url.path else model[:-1] + b"X"
        return httpx.Response(200, content=body, headers={"X-Checksum-SHA256": good})

    with studio(handler) as s:
        progress: list[tuple[int, int | None]] = []
        saved = s.exports.download(
            "good", tmp_path / "m.onnx", lambda a, b: progress.append((a, b))
        )
        assert saved.read_bytes() == model and progress[-1] == (len(model), len(model))
        with pytest.raises(ChecksumMismatch):
            s.exports.download("bad", tmp_path / "bad.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no part file either


def test_an_upload_is_one_well_formed_file_part_of_the_announced_length(tmp_path: Path):
    archive = tmp_path / 'my "data".zip'
    archive.write_bytes(bytes(range(256)) * 3000)
    progress: list[tuple[int, int | None]] = []
    upload = multipart_upload(archive, progress=lambda a, b: progress.append((a, b)))

    async def body() -> bytes:
        return b"".join([chunk async for chunk in upload.stream()])

    raw = asyncio.run(body())
    assert len(raw) == upload.length
    parts: dict[str, bytes] = {}
    boundary = upload.content_type.split("boundary=")[1].encode()
    current: list[bytes] = []
    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]  # a TypedDict of the parser's callbacks
            "on_part_data": lambda d, s, e: current.append(d[s:e]),
            "on_part_end": lambda: parts.setdefault(f"p{len(parts)}", b"".join(current)),
        },
    )
    parser.write(raw)
    assert list(parts.values()) == [archive.read_bytes()]
    assert progress[0] == (0, archive.stat().st_size) and progress[-1][0] == progress[-1][1]


def test_the_package_imports_nothing_of_the_services_or_the_contracts():
    code = (
        "import sys, studio_client, studio_client.models, studio_client.errors;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'contracts'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_following_a_run_ends_at_its_stop_unless_it_was_resumed_since():
    stream = sse(
        ("status", 3, '{"status": "stopped"}'),
        ("status", 4, '{"status": "queued"}'),
        ("status", 5, '{"status": "stopped"}'),
    )
    statuses = iter(["queued", "stopped"])  # resumed after the first stop, not the second

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return httpx.Response(200, content=stream)
        run = {"id": "r1", "project_id": "p", "split_id": "s", "status": next(statuses)}
        return httpx.Response(200, json={"status": "ok", "data": run})

    with studio(handler) as s:
        assert [e.id for e in s.runs.follow("r1")] == [3, 4, 5]


def test_a_download_that_breaks_off_is_started_again(tmp_path: Path):
    model = b"weights" * 5000
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        digest = hashlib.sha256(model).hexdigest()
        disposition = 'attachment; filename="run-exp.onnx"'
        headers = {"X-Checksum-SHA256": digest, "Content-Disposition": disposition}
        return httpx.Response(200, content=model, headers=headers)

    with studio(handler) as s:
        saved = s.exports.download("e1", tmp_path)  # a folder: the gateway's file name
    assert saved == tmp_path / "run-exp.onnx" and saved.read_bytes() == model
    assert len(calls) == 2


def test_a_stream_closed_because_the_access_token_expired_goes_on_after_a_refresh():
    # given a session whose access token expires while a run is followed
    tokens = {"access_token": "a1", "refresh_token": "r1", "expires_in": 1}
    fresh = {"access_token": "a2", "refresh_token": "r2", "expires_in": 900}
    asked: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/token"):
            return httpx.Response(200, json=tokens | {"status": "ok", "data": tokens})
        if request.url.path.endswith("/auth/refresh"):
            return httpx.Response(200, json=fresh | {"status": "ok", "data": fresh})
        auth = request.headers["Authorization"]
        asked.append((auth, request.headers.get("Last-Event-ID")))
        if auth == "Bearer a1":
            expired = '{"code": "UNAUTHENTICATED", "message": "the access token expired"}'
            return httpx.Response(
                200, content=sse(("epoch_end", 1, '{"epoch": 1}'), ("closed", None, expired))
            )
        return httpx.Response(200, content=sse(("complete", 2, "{}")))

    # when it is followed
    with StudioClient("http://s", transport=httpx.MockTransport(handler), retry=FAST) as s:
        s.auth.login("admin", "pw")
        events = list(s.runs.follow("r1"))

    # then it went on with the new token, from where it was
    assert [(e.event, e.id) for e in events] == [("epoch_end", 1), ("complete", 2)]
    assert asked == [("Bearer a1", None), ("Bearer a2", "1")]


def test_calling_the_blocking_client_from_its_own_callback_is_refused_not_a_deadlock(
    tmp_path: Path,
):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK" + bytes(1000))
    imported = {"id": "i1", "project_id": "p1", "state": "running"}

    with studio(lambda r: httpx.Response(202, json={"status": "ok", "data": imported})) as s:
        with pytest.raises(RuntimeError, match="own callbacks"):
            s.imports.upload("p1", archive, progress=lambda sent, total: s.projects.get("p1"))
        assert s.imports.upload("p1", archive).id == "i1"  # and the client still works

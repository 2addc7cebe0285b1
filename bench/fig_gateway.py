"""Gateway figures: reads and the create round trip, against a bare FastAPI app side by side.

Reads: ``GET /api/v1/projects/{id}`` and an image list page at 32 keep-alive clients; the bare
app answers the same JSON bytes. Create: ``POST /api/v1/projects`` (read-your-writes included) at
16 clients; the bare app validates the same body and does one fsynced JetStream publish. Load
from ``bench.loadgen``. Imports httpx (set-up only), the bench helpers and ``tests.stack``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.core import Row, data_of, interleave, median_ratio, quantile
from bench.loadgen import hammer, request
from services.kernel.nats_server import free_port
from tests import imagesets
from tests.stack import Stack

API = "/api/v1"


def bare_app(
    stack: Stack, bodies: dict[str, str], root: Path
) -> tuple[subprocess.Popen[bytes], int]:
    path, port = root / "bare-bodies.json", free_port()
    path.write_text(json.dumps(bodies))
    log = (root / "bare_app.log").open("ab")
    cmd = [sys.executable, "-m", "bench.bare_app", str(port), stack.nats_url, str(path)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/projects/x", timeout=2)
            return proc, port
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the bare app did not start within 60 s")


def project_with_images(stack: Stack, api: httpx.Client) -> str:
    folder = imagesets.folder(stack.imports / "gateway-read", {"cat": 30, "dog": 30})
    pid = data_of(api, "POST", f"{API}/projects", json={"name": "gateway read"})["id"]
    body = {"project_id": pid, "path": str(folder)}
    job_id = data_of(api, "POST", f"{API}/datasets/import/local", json=body)["id"]
    deadline = time.monotonic() + 120
    while data_of(api, "GET", f"{API}/datasets/import/{job_id}")["state"] != "completed":
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway-read import did not complete within 120 s")
        time.sleep(0.2)
    return str(pid)


def run(stack: Stack, api: httpx.Client, args: Any, root: Path) -> list[Row]:
    pid = project_with_images(stack, api)
    paths = {"project": f"{API}/projects/{pid}", "images": f"{API}/datasets/{pid}/images?limit=50"}
    bodies = {k: api.get(p).text for k, p in paths.items()}
    proc, bare_port = bare_app(stack, bodies, root)
    auth = stack.headers()
    try:
        rows = [_read(stack, bare_port, auth, name, path, args) for name, path in paths.items()]
        rows.append(_create(stack, bare_port, auth, args))
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def _port(stack: Stack) -> int:
    return int(stack.base_url.rsplit(":", 1)[1])


def _read(stack: Stack, bare: int, auth: dict[str, str], name: str, path: str, args: Any) -> Row:
    studio_req = request("GET", path, auth)
    bare_req = request("GET", path, {})
    p99: dict[str, list[float]] = {"studio": [], "bare": []}

    def side(port: int, req: bytes, key: str) -> float:
        load = hammer("127.0.0.1", port, lambda _: req, 32, args.seconds)
        if load.errors:
            raise RuntimeError(f"{key} {path}: {load.errors} errors {load.statuses}")
        p99[key].append(quantile(load.latencies_ms, 0.99))
        return load.rate

    s, b = interleave(lambda: side(_port(stack), studio_req, "studio"),
                      lambda: side(bare, bare_req, "bare"), args.rounds)  # fmt: skip
    what = "GET /projects/{id}" if name == "project" else "GET image list page (50)"
    studio_p99, bare_p99 = p99["studio"], p99["bare"]
    note = (f"p99 ms studio {min(studio_p99):.1f}-{max(studio_p99):.1f}, "
            f"bare {min(bare_p99):.1f}-{max(bare_p99):.1f}; 32 clients")  # fmt: skip
    return Row(f"gateway read: {what}", "req/s", s, b, median_ratio(s, b), "≥ 0.7", note, p99)


def _create(stack: Stack, bare: int, auth: dict[str, str], args: Any) -> Row:
    headers = auth | {"Content-Type": "application/json"}
    lat: dict[str, list[float]] = {"studio": [], "bare": []}

    def make(n: int, h: dict[str, str]) -> bytes:
        body = json.dumps({"name": f"bench create {n}", "description": "x"}).encode()
        return request("POST", f"{API}/projects", h, body)

    def side(port: int, h: dict[str, str], key: str) -> float:
        load = hammer("127.0.0.1", port, lambda n: make(n, h), 16, args.seconds)
        if load.errors:
            raise RuntimeError(f"{key} create: {load.errors} errors {load.statuses}")
        lat[key] += load.latencies_ms
        return load.rate

    plain = {"Content-Type": "application/json"}
    s, b = interleave(lambda: side(_port(stack), headers, "studio"),
                      lambda: side(bare, plain, "bare"), args.rounds)  # fmt: skip
    ms = {k: (quantile(v, 0.5), quantile(v, 0.99)) for k, v in lat.items()}
    note = (f"p50/p99 ms studio {ms['studio'][0]:.1f}/{ms['studio'][1]:.1f}, "
            f"bare {ms['bare'][0]:.1f}/{ms['bare'][1]:.1f}; 16 clients")  # fmt: skip
    return Row("command round trip: POST /projects", "creates/s", s, b, median_ratio(s, b),
               "≥ 0.6", note, {"p50_p99_ms": ms})  # fmt: skip

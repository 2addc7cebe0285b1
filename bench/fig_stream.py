"""Epoch → client: from an epoch's append to its arrival at SSE clients of the run's stream,
with 1 and with 1,000 clients connected to one gateway.

The clients run in a child process (their reading must not share the appending process's
loop); both sides stamp ``time.monotonic()``, one clock for every process of the machine. Epochs
are appended straight to the event store (``tests.stream_helpers.Runs``) every 0.2 s; a gap is
an epoch some client never received. Imports the bench helpers and ``tests.stream_helpers``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from bench.core import Row, quantile
from contracts import new_id
from tests.stack import Stack
from tests.stream_helpers import Runs, SseClient

API = "/api/v1"


async def _clients(base_url: str, path: str, headers: dict[str, str], n: int, epochs: int,
                   ready: Any, out: Any) -> None:  # fmt: skip
    clients = [SseClient(base_url, path, headers=headers) for _ in range(n)]
    for start in range(0, n, 50):
        await asyncio.gather(*(c.open() for c in clients[start : start + 50]))
    for client in clients:  # the stream's history (queued, started) has arrived
        if client.status != 200:
            raise RuntimeError(f"the run's stream answered {client.status}")
        await client.wait(lambda c: len(c.events) >= 2, 60)
    ready.set()

    def epochs_of(c: SseClient) -> list[float]:
        return [t for (_, name), t in zip(c.events, c.arrivals, strict=True) if "epoch" in name]

    deadline = time.monotonic() + 60 + epochs
    for client in clients:  # a client still short of an epoch at the deadline shows as a gap
        left = max(0.1, deadline - time.monotonic())
        await client.wait(lambda c: len(epochs_of(c)) >= epochs, left)
    out.put([epochs_of(c) for c in clients])
    for client in clients:
        await client.close()


def _child(*args: Any) -> None:
    asyncio.run(_clients(*args))


async def _append(url: str, run_id: str, epochs: int) -> list[float]:
    nc, runs = await Runs.connect(url)
    stamps = []
    for n in range(1, epochs + 1):
        stamps.append(time.monotonic())
        await runs.epochs(run_id, n)
        await asyncio.sleep(0.2)
    await nc.close()
    return stamps


async def _run(url: str, project_id: str) -> str:
    nc, runs = await Runs.connect(url)
    run_id = await runs.queue(new_id(), project_id)
    await runs.start(run_id)
    await nc.close()
    return run_id


def one(stack: Stack, project_id: str, clients: int, epochs: int) -> Row:
    run_id = asyncio.run(_run(stack.nats_url, project_id))
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    path = f"{API}/training/runs/{run_id}/stream"
    proc = ctx.Process(target=_child, args=(stack.base_url, path, stack.headers(), clients,
                                            epochs, ready, out))  # fmt: skip
    proc.start()
    opened = time.monotonic()
    deadline = time.monotonic() + 300
    while not ready.wait(0.5):
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{clients} SSE clients did not connect (see the error above)")
    took = time.monotonic() - opened
    stamps = asyncio.run(_append(stack.nats_url, run_id, epochs))
    arrivals: list[list[float]] = out.get(timeout=120 + epochs)
    proc.join(30)
    delays = [(a - s) * 1000 for got in arrivals for a, s in zip(got, stamps, strict=False)]
    gaps = sum(epochs - len(got) for got in arrivals)
    if not delays:
        raise RuntimeError(f"no client received an epoch ({gaps} gaps)")
    p50, p99 = quantile(delays, 0.5), quantile(delays, 0.99)
    note = (f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(delays):.1f} ms; {gaps} gaps; "
            f"{epochs} epochs; clients connected in {took:.1f} s")  # fmt: skip
    extra = {"p50": p50, "p99": p99, "gaps": gaps, "delays_ms": delays[:2000]}
    name = f"epoch → client, {clients} SSE client{'s' * (clients > 1)}"
    return Row(name, "ms p99", [p99], goal="p99 ≤ 50 ms at 1,000, 0 gaps", note=note, extra=extra)


def run(root: Path, args: Any) -> list[Row]:
    """On a stack of its own with no trainer: a trainer would claim (and fail) the run whose
    events this figure writes by hand, and its stream would end before the epochs."""
    stack = Stack(root / "streams", ("projects",), STUDIO_LOG_LEVEL="ERROR").up(timeout=180)
    try:
        with stack.sync_client(timeout=60) as api:
            project = api.post(f"{API}/projects", json={"name": "streams"}).json()["data"]["id"]
        return [one(stack, project, n, args.epochs_streamed) for n in (1, args.sse_clients)]
    finally:
        stack.down()

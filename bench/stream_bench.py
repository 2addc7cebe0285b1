"""REST latency with hundreds of open streams against the same gateway idle, in one run.

    .venv/bin/python -m bench.stream_bench [--sse 500] [--ws 50] [--requests 300]

Starts the studio (nats-server, projects, gateway), measures GETs one after another on an idle
gateway, then opens ``--sse`` SSE clients on a project's events and ``--ws`` WebSockets on an
experiment (in a child process, so that their reading does not share this process's loop) and
measures the same GETs again, first with the streams open and quiet ("open"), then while the
project changes and a run writes epochs every 0.2 s, each fanned out to every client ("loaded").
Prints p50/p99 of both and the loaded/idle p99 ratio (the goal: at most 2x), and the spread of
each event's arrival over the SSE clients (first to last). Fails only when a GET fails.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.arguments import at_least
from contracts import new_id
from tests.stack import Stack
from tests.stream_helpers import Runs, SseClient, frame, ws_url

API = "/api/v1"


async def load(
    base_url: str, path: str, experiment: str, args: argparse.Namespace, ready: Any, stop: Any
) -> None:
    """The open streams: every client reads until ``stop``; prints what each received."""
    clients = [SseClient(base_url, path) for _ in range(args.sse)]
    for batch in range(0, len(clients), 50):
        await asyncio.gather(*(c.open() for c in clients[batch : batch + 50]))
    for client in clients:
        await client.wait(lambda c: len(c.events) >= 1, 120)
    sockets = [
        await connect(ws_url(base_url, f"/ws/experiments/{experiment}")) for _ in range(args.ws)
    ]
    frames = [0] * len(sockets)

    async def read(i: int) -> None:
        async for raw in sockets[i]:
            frame(raw)
            frames[i] += 1

    readers = [asyncio.create_task(read(i)) for i in range(len(sockets))]
    ready.set()
    await asyncio.to_thread(stop.wait)
    events = sorted({len(c.events) for c in clients})
    common = min(len(c.arrivals) for c in clients)
    spreads = [
        1000 * (max(c.arrivals[i] for c in clients) - min(c.arrivals[i] for c in clients))
        for i in range(1, common)
    ]
    if spreads:
        print(
            f"an event reached all {args.sse} SSE clients within {statistics.median(spreads):.0f}"
            f" ms of the first (median; max {max(spreads):.0f} ms, {len(spreads)} events)"
        )
    print(
        f"load: {args.sse} SSE clients received {events} events each; "
        f"{args.ws} sockets received {min(frames)}..{max(frames)} messages"
    )
    for task in readers:
        task.cancel()
    for client in clients:
        await client.close()


def child(
    base_url: str, path: str, experiment: str, args: argparse.Namespace, ready: Any, stop: Any
) -> None:
    asyncio.run(load(base_url, path, experiment, args, ready, stop))


def timings(base_url: str, paths: list[str], requests: int) -> list[float]:
    """Milliseconds of ``requests`` GETs, one after another, round-robin over ``paths``."""
    out = []
    with httpx.Client(base_url=base_url, timeout=60) as api:
        for i in range(requests):
            start = time.perf_counter()
            resp = api.get(paths[i % len(paths)])
            out.append((time.perf_counter() - start) * 1000)
            if resp.status_code != 200:
                raise SystemExit(f"GET {paths[i % len(paths)]} answered {resp.status_code}")
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def writer(stack: Stack, pid: str, run_id: str, stop: asyncio.Event) -> int:
    """Changes the project and writes epochs every 0.2 s while the loaded GETs run."""
    nc, runs = await Runs.connect(stack.nats_url)
    n = 0
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as api:
        while not stop.is_set():
            n += 1
            await api.patch(f"{API}/projects/{pid}", json={"name": f"r{n}"})
            await runs.epochs(run_id, n)
            await asyncio.sleep(0.2)
    await nc.close()
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sse", type=at_least(0), default=500)
    parser.add_argument("--ws", type=at_least(0), default=50)
    parser.add_argument("--requests", type=at_least(1), default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), ("projects",), STUDIO_LOG_LEVEL="ERROR").up()
        try:
            return bench(stack, args)
        finally:
            stack.down()


def bench(stack: Stack, args: argparse.Namespace) -> int:
    with httpx.Client(base_url=stack.base_url, timeout=60) as api:
        pid = api.post(f"{API}/projects", json={"name": "watched"}).json()["data"]["id"]
    experiment = new_id()

    async def a_running_run() -> str:
        nc, runs = await Runs.connect(stack.nats_url)
        run_id = await runs.queue(experiment)
        await runs.start(run_id)
        await nc.close()
        return run_id

    run_id = asyncio.run(a_running_run())
    paths = [f"{API}/projects/{pid}", f"{API}/training/runs/{run_id}", f"{API}/projects"]
    timings(stack.base_url, paths, 30)  # warm up
    idle = timings(stack.base_url, paths, args.requests)

    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    opened = time.perf_counter()
    proc = ctx.Process(
        target=child,
        args=(stack.base_url, f"{API}/projects/{pid}/events", experiment, args, ready, stop),
    )
    proc.start()
    if not ready.wait(300):
        proc.kill()
        raise SystemExit("the streams did not open within 300 s")
    took = time.perf_counter() - opened
    print(f"opened {args.sse} SSE clients and {args.ws} WebSockets in {took:.1f} s")

    async def loaded_phase() -> tuple[list[float], int]:
        halt = asyncio.Event()
        task = asyncio.create_task(writer(stack, pid, run_id, halt))
        result = await asyncio.to_thread(timings, stack.base_url, paths, args.requests)
        halt.set()
        return result, await task

    quiet = timings(stack.base_url, paths, args.requests)
    loaded, writes = asyncio.run(loaded_phase())
    stop.set()
    proc.join(60)
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; "
        f"{writes} project changes and epochs written while measuring"
    )
    print(f"{'GET ms':>10} {'p50':>8} {'p99':>8}")
    rows = (("idle", idle), ("open", quiet), ("loaded", loaded))
    for name, values in rows:
        print(f"{name:>10} {p(values, 50):8.1f} {p(values, 99):8.1f}")
    print(f"p99 open/idle: {p(quiet, 99) / p(idle, 99):.2f}x (streams open, no events)")
    ratio = p(loaded, 99) / p(idle, 99)
    print(f"p99 loaded/idle: {ratio:.2f}x (goal: at most 2x; events fanned out meanwhile)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

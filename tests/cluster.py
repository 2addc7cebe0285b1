"""What a test on a three-node NATS cluster needs: which node leads a stream, a node killed
and brought back, every stored event of an aggregate with its message id, and two clients that
watch from outside: one that measures the longest time the API could not take a write and
read it back, and one that follows a run's SSE stream as a browser would.

Imports the contracts, ``services.kernel`` and ``tests.stack`` only.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import nats

from services.kernel.eventstore import H_MSG_ID
from services.kernel.transient import retry_transient
from tests.stack import API, Stack


async def _leader(stack: Stack, stream: str) -> str:
    nc = await nats.connect(stack.nats_url.split(","), connect_timeout=5)
    try:
        info = await nc.jetstream().stream_info(stream)
        return str(info.cluster.leader if info.cluster else "")
    finally:
        await nc.close()


def stream_leader(stack: Stack, stream: str, timeout: float = 60.0) -> int:
    """The index of the node that leads ``stream`` now (waits while it has none)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            leader = asyncio.run(_leader(stack, stream))
            if leader.startswith("n"):
                return int(leader.removeprefix("n"))
        except Exception:  # an election under way: ask again
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


async def _stored(stack: Stack, stream: str, subject: str) -> list[tuple[str, str, bytes]]:
    """(message id, event type, data) of every message on ``subject``, in order."""
    nc = await nats.connect(stack.nats_url.split(","), connect_timeout=5)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        sub = await js.subscribe(subject, ordered_consumer=True)
        out: list[tuple[str, str, bytes]] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=2.0)
                headers = msg.headers or {}
                out.append(
                    (headers.get(H_MSG_ID, ""), headers.get("Studio-Event-Type", ""), msg.data)
                )
                if msg.metadata.sequence.stream >= last or msg.metadata.num_pending == 0:
                    return out
        except TimeoutError:
            return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def stored_events(stack: Stack, stream: str, subject: str) -> list[tuple[str, str, bytes]]:
    """Every message on ``subject``: read as a service would, waiting out an election."""
    return asyncio.run(
        retry_transient(
            lambda: _stored(stack, stream, subject), what=f"reading {subject}", retry_for=60
        )
    )


def duplicates(events: list[tuple[str, str, bytes]]) -> int:
    """How many stored messages repeat the message id of an earlier one."""
    return sum(n - 1 for n in Counter(e[0] for e in events).values())


class OutageProbe(threading.Thread):
    """Creates a project and reads it back, over and over, until stopped: the longest time
    between two successful rounds is the outage a client saw; 5xx other than 503 UNAVAILABLE
    are failures (a 503 is an honest "try again", which the outage counts)."""

    def __init__(self, stack: Stack, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.stack, self.every = stack, every
        self.halt = threading.Event()
        self.failures: list[str] = []
        self.rounds = 0
        self.longest_outage_s = 0.0
        self.created: list[str] = []

    def run(self) -> None:
        last_ok = time.monotonic()
        with self.stack.sync_client(timeout=60) as api:
            while not self.halt.is_set():
                if self._round(api):
                    now = time.monotonic()
                    self.longest_outage_s = max(self.longest_outage_s, now - last_ok)
                    last_ok = now
                    self.rounds += 1
                time.sleep(self.every)

    def _round(self, api: httpx.Client) -> bool:
        try:
            key = {"Idempotency-Key": uuid.uuid4().hex}
            made = api.post(f"{API}/projects", json={"name": "probe"}, headers=key)
            if made.status_code != 201:
                return self._failed(made)
            self.created.append(made.json()["data"]["id"])
            back = api.get(f"{API}/projects/{self.created[-1]}")
            return back.status_code == 200 or self._failed(back)
        except httpx.HTTPError as exc:
            self.failures.append(f"no answer: {exc!r}")
            return False

    def _failed(self, resp: httpx.Response) -> bool:
        if resp.status_code >= 500 and not _unavailable(resp):
            self.failures.append(f"{resp.request.url} {resp.status_code} {resp.text[:300]}")
        return False

    def stop(self) -> None:
        self.halt.set()
        self.join(90)


def _unavailable(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return bool(body.get("status") == "error" and body["error"]["code"] == "UNAVAILABLE")


class Follower(threading.Thread):
    """Follows a run's SSE stream until ``complete`` (reconnecting with ``Last-Event-ID`` if the
    stream breaks, as a browser does), keeping every event but progress and keepalives."""

    def __init__(self, stack: Stack, run_id: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.run_id = stack, run_id
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.reconnects = 0
        self.last_id = ""

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if self._follow():
                    return
            except httpx.HTTPError:
                pass
            self.reconnects += 1
            time.sleep(0.2)

    def _follow(self) -> bool:
        url = f"{self.stack.base_url}{API}/training/runs/{self.run_id}/stream"
        headers = self.stack.headers() | ({"Last-Event-ID": self.last_id} if self.last_id else {})
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(30, read=120)) as sse:
            self.connected.set()
            name = ""
            for line in sse.iter_lines():
                if line.startswith("id: "):
                    self.last_id = line.removeprefix("id: ")
                elif line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: ") and name not in ("progress", "keepalive"):
                    self.events.append((name, json.loads(line.removeprefix("data: "))))
                    if name == "complete":
                        return True
        return False

    def epochs(self) -> list[int]:
        return [int(data["epoch"]) for name, data in self.events if name == "epoch_end"]


async def _replicas(stack: Stack) -> dict[str, int]:
    nc = await nats.connect(stack.nats_url.split(","), connect_timeout=5)
    try:
        return {
            str(info.config.name): int(info.config.num_replicas or 1)
            for info in await nc.jetstream().streams_info()
        }
    finally:
        await nc.close()


def replicas(stack: Stack) -> dict[str, int]:
    """Every stream of the stack's NATS (buckets included: ``KV_``, ``OBJ_``) and its replicas."""
    return asyncio.run(_replicas(stack))


def post(api: httpx.Client, path: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
    """POST as a careful client does while a node is down: one Idempotency-Key, sent again
    while the answer is 503 UNAVAILABLE (an election outlasting the gateway's wait); the
    first other answer is returned."""
    key = {"Idempotency-Key": uuid.uuid4().hex}
    deadline = time.monotonic() + timeout
    while True:
        resp = api.post(f"{API}{path}", json=body, headers=key)
        if not _unavailable(resp) or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)

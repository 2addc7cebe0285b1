"""Shared steps of the stream tests: runs written straight into the event store (so that no
trainer is needed to have a run with epochs that completes or fails), and light SSE and
WebSocket clients that hundreds of can run in one test process."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS

from contracts import new_id
from contracts import training as c
from services.kernel.eventstore import EventStore


class Runs:
    """Appends a run's events as the trainer would; each ``add`` returns the last sequence."""

    def __init__(self, nc: NATS) -> None:
        self.store: EventStore[Any] = EventStore(
            nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )

    @classmethod
    async def connect(cls, url: str) -> tuple[NATS, Runs]:
        nc = await nats.connect(url)
        return nc, cls(nc)

    async def add(self, run_id: str, *events: Any) -> int:
        version = await self.store.version(run_id)
        return await self.store.append(run_id, list(events), version)

    async def queue(self, experiment_id: str, project_id: str | None = None) -> str:
        run_id = new_id()
        await self.add(
            run_id,
            c.RunQueued(
                run_id=run_id,
                experiment_id=experiment_id,
                project_id=project_id or new_id(),
                split_id=new_id(),
                hyperparameters=c.Hyperparameters(epochs=3),
                classes=["a", "b"],
                train_images=10,
                val_images=4,
            ),
        )
        return run_id

    async def start(self, run_id: str) -> int:
        return await self.add(
            run_id,
            c.RunStarted(
                run_id=run_id, instance="t", device="cpu", lease="t", attempt=1, start_epoch=1
            ),
        )

    async def epochs(self, run_id: str, *numbers: int) -> int:
        return await self.add(run_id, *(epoch(run_id, n) for n in numbers))

    async def complete(self, run_id: str, epochs: int) -> int:
        done = c.RunCompleted(
            run_id=run_id, epochs=epochs, best_epoch=epochs, best_val_accuracy=0.9
        )
        return await self.add(run_id, done)

    async def fail(self, run_id: str) -> int:
        return await self.add(run_id, c.RunFailed(run_id=run_id, code="BOOM", message="it broke"))


def epoch(run_id: str, n: int) -> c.EpochCompleted:
    return c.EpochCompleted(
        run_id=run_id,
        epoch=n,
        train_loss=1.0 / n,
        val_loss=1.5 / n,
        val_accuracy=0.5 + n / 100,
        learning_rate=1e-3,
        seconds=0.1,
        images_per_second=100.0,
    )


@dataclass
class SseClient:
    """An SSE client on a raw socket: light enough for hundreds in one process. ``events``
    are (id, event) pairs in order of arrival; ``ended`` once the server ended the body."""

    base_url: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)
    #: ``time.monotonic()`` at each event's arrival (for benchmarks).
    arrivals: list[float] = field(default_factory=list)
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        url = urlsplit(self.base_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        request = f"GET {self.path} HTTP/1.1\r\nHost: {url.netloc}\r\n{head}\r\n"
        writer.write(request.encode())
        await writer.drain()
        self.status = int((await reader.readline()).split()[1])
        while (await reader.readline()).strip():
            pass  # response headers
        if self.status != 200:  # 204: the client has everything; 404: no such stream
            self.ended = True
            writer.close()
            return
        self._task = asyncio.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current: dict[str, str] = {}
        buffer = b""
        try:
            while size := int((await reader.readline()).strip() or b"-1", 16):
                if size < 0:
                    raise ConnectionError("the server dropped the stream without ending it")
                buffer += await reader.readexactly(size)
                await reader.readexactly(2)
                *lines, rest = buffer.split(b"\n")
                buffer = rest
                for line in (raw.decode() for raw in lines):
                    if not line and "event" in current:
                        self.events.append((current.get("id", ""), current["event"]))
                        self.arrivals.append(time.monotonic())
                        self.changed.set()
                    if not line:
                        current = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(": ")
                        current[key] = value
            self.ended = True
        finally:
            self.changed.set()
            writer.close()

    def names(self) -> list[str]:
        return [name for _, name in self.events]

    async def wait(self, condition: Any, timeout: float) -> None:
        """Until ``condition(self)`` holds (or the deadline: the caller asserts after)."""
        try:
            async with asyncio.timeout(timeout):
                while not condition(self) and self._task is not None and not self._task.done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def ws_url(base_url: str, path: str) -> str:
    return base_url.replace("http://", "ws://") + path


def frame(raw: str | bytes) -> dict[str, Any]:
    """A WebSocket message as a browser reads it: it must be a TEXT frame of JSON."""
    assert isinstance(raw, str), f"a binary frame reached the client: {raw!r}"
    return json.loads(raw)  # type: ignore[no-any-return]

"""The WebSocket hub of the original documents: one socket per client (``/ws/{client_id}``) that
subscribes to runs, imports and experiments by id, and receives what each does as text frames
``{"type", "payload"}``.

The client sends ``{"type": "subscribe", "payload": {"run_id" | "import_id" | "experiment_id":
id}}`` (``"last_event_id"`` optional, to resume a run's or an experiment's history after a
stream sequence), ``unsubscribe`` likewise, or ``ping``. It receives ``subscribed`` /
``unsubscribed`` acknowledgements (nothing of a subscription follows its ``unsubscribed``),
then each subscription's messages as its SSE names them (``status``, ``progress``,
``epoch_end``, ``checkpoint``, ``complete``, ``error`` ...; every payload carries the id it was
subscribed by), and ``{"type": "error", "payload": {"code", "message", ...}}`` for a message it
cannot act on: a malformed one, an unknown type, or an id it may not read (``NOT_FOUND``,
worded as for an unknown id). An error never closes the socket.

It authenticates as the other WebSocket routes do (a header, or a stream token as
``?access_token=``; refused with an ``error`` and a close 4401), and each subscription is
checked again every few seconds like any stream (``stream_guard``): one the caller may no longer
read ends with an ``error`` frame. Run and experiment feeds are ``training_streams``' own; an
import's is its read model and its live progress. Imports the gateway's ports, the access rules,
the stream machinery and the read models; no other route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from fastapi import APIRouter, WebSocket
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocketDisconnect

from contracts import common
from contracts import datasets as d
from contracts import training as t
from services.gateway import access
from services.gateway.api.training_sockets import _refuse as refuse
from services.gateway.api.training_sockets import (
    experiment_items,
    experiment_rows,
    view_experiment,
)
from services.gateway.envelope import ApiError
from services.gateway.gateway import Gateway
from services.gateway.readmodels import datasets as datasets_read
from services.gateway.readmodels import training as training_read
from services.gateway.stream_guard import CLOSE_UNAUTHENTICATED, Guard, guarded, open_guard
from services.gateway.training_streams import Item, ending_of, run_feed
from services.kernel.eventstore import check_id
from services.kernel.sqlite import session

router = APIRouter(tags=["live"])

#: What a client may subscribe to, by the payload field that names it.
TOPICS: Final = ("run_id", "import_id", "experiment_id")
#: Subscriptions one socket may hold at once.
SUBSCRIPTIONS_MAX: Final = 64
#: The longest message a client may send, in characters.
MESSAGE_MAX: Final = 4096
#: Frames waiting for a slow client before feeds wait for it in turn.
OUTBOX_MAX: Final = 1000
#: How long a closing socket waits for its last frames to leave.
OUTBOX_DRAIN_S: Final = 5.0
BAD_MESSAGE: Final = common.VALIDATION_ERROR


class Refused(Exception):
    """A client message the hub cannot act on: answered with an ``error`` frame."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.payload = {"code": code, "message": message, **extra}


@router.websocket("/ws/{client_id}")
async def hub(websocket: WebSocket, client_id: str) -> None:
    """Subscribe to runs, imports and experiments by id; ``{"type", "payload"}`` text frames
    both ways. Without a valid credential (a header, or a stream token as ``?access_token=``),
    an ``error`` and a close 4401."""
    await websocket.accept()
    try:
        principal = await access.principal_of(websocket)  # before anything else is said
        if not _valid(client_id):
            raise ApiError(common.VALIDATION_ERROR, "client_id is malformed", field="client_id")
    except (ApiError, HTTPException) as exc:
        await refuse(websocket, exc)
        return
    # The socket's own credential, checked again at each subscription: one that has ended
    # (expired, signed out, revoked) subscribes to nothing more, and the socket is closed.
    credential = Guard(websocket, principal, _nothing)
    await Hub(websocket, websocket.app.state.gateway, client_id, credential).serve()


async def _nothing() -> None:
    return None


class CredentialEnded(Exception):
    """The socket's credential no longer stands: an ``error`` frame, then the close."""


@dataclass
class Hub:
    websocket: WebSocket
    gateway: Gateway
    client_id: str
    credential: Guard
    outbox: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(OUTBOX_MAX))
    subscriptions: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)

    async def serve(self) -> None:
        """Read the client's messages and send the frames until it goes; then every
        subscription stops at once (a gone client keeps no NATS subscription)."""
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
        finally:
            for task in [*self.subscriptions.values(), writer]:
                task.cancel()
            for task in [*self.subscriptions.values(), writer]:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                    await task

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self._handle(message.get("text"))
            except Refused as refused:
                await self.send("error", refused.payload)
            except CredentialEnded:
                await self._close()
                return

    async def _write(self) -> None:
        while True:
            await self.websocket.send_text(await self.outbox.get())
            self.outbox.task_done()

    async def _close(self) -> None:
        """Say why the credential ended (once every frame before it is sent), then close:
        4401 when it is no longer valid, 4000 + the status otherwise."""
        ended = self.credential.ended
        assert ended is not None
        await self.send("error", {"code": ended.code, "message": ended.message})
        with contextlib.suppress(TimeoutError):  # a client gone meanwhile takes no frames
            await asyncio.wait_for(self.outbox.join(), OUTBOX_DRAIN_S)
        code = CLOSE_UNAUTHENTICATED if ended.status == 401 else 4000 + ended.status
        await self.websocket.close(code=code, reason=ended.code)

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        await self.outbox.put(msgspec.json.encode({"type": kind, "payload": payload}).decode())

    async def _handle(self, text: str | None) -> None:
        kind, payload = _parse(text)
        if kind == "ping":
            await self.send("pong", {"client_id": self.client_id})
            return
        if kind not in ("subscribe", "unsubscribe"):
            raise Refused(BAD_MESSAGE, f"unknown message type {kind!r}", field="type")
        topic, an_id = _topic(payload)
        if kind == "unsubscribe":
            await self._unsubscribe(topic, an_id)
        else:
            await self._subscribe(topic, an_id, _after(payload))

    async def _subscribe(self, topic: str, an_id: str, after: int) -> None:
        if not await self.credential.allowed():
            raise CredentialEnded
        key = (topic, an_id)
        if key not in self.subscriptions and len(self.subscriptions) >= SUBSCRIPTIONS_MAX:
            raise Refused("TOO_MANY_SUBSCRIPTIONS", f"at most {SUBSCRIPTIONS_MAX} at once")
        try:
            items, guard = await self._open(topic, an_id, after)
        except (ApiError, HTTPException) as exc:
            code, message = _reason(exc)
            raise Refused(code, message, **{topic: an_id}) from None
        old = self.subscriptions.pop(key, None)
        if old is not None:  # subscribing again starts over from ``after``
            old.cancel()
        await self.send("subscribed", {topic: an_id})
        task = asyncio.create_task(self._pump(key, guarded(items, guard), guard))
        self.subscriptions[key] = task

    async def _unsubscribe(self, topic: str, an_id: str) -> None:
        """Acknowledged whether or not it was still subscribed (its feed may have ended just
        now): after ``unsubscribed``, nothing more of it is sent."""
        task = self.subscriptions.pop((topic, an_id), None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.send("unsubscribed", {topic: an_id})

    async def _open(self, topic: str, an_id: str, after: int) -> tuple[AsyncIterator[Item], Guard]:
        """The subscription's feed and its guard, the caller's access checked first."""
        gateway, ws = self.gateway, self.websocket
        if topic == "run_id":
            await gateway.fresh(t.STREAM, t.event_subject(an_id))
            async with session(gateway.engine) as db:
                row = await training_read.get_run(db, run_id=an_id)
            if row is None:  # worded as the access check words an id one may not read
                raise access.missing("run", an_id)
            guard = await open_guard(ws, lambda: access.require_of(ws, "run", an_id, "viewer"))
            ending, _ = await ending_of(gateway.js, [row], after)
            return run_feed(gateway.broker.connection, an_id, after, ending), guard
        if topic == "experiment_id":
            rows = await experiment_rows(gateway, an_id, None)
            guard = await open_guard(ws, lambda: view_experiment(ws, an_id, rows))
            _, items = await experiment_items(gateway, an_id, rows, after)
            return items, guard
        guard = await open_guard(ws, lambda: access.require_of(ws, "import", an_id, "viewer"))
        return import_feed(gateway, an_id), guard

    async def _pump(self, key: tuple[str, str], items: AsyncIterator[Item], guard: Guard) -> None:
        """A subscription's items as frames until its feed ends (or access does: an
        ``error`` frame says why), then it is forgotten."""
        topic, an_id = key
        try:
            async for item in items:
                if item.name != "keepalive":
                    payload = item.payload | {topic: an_id}
                    if item.sequence is not None:
                        payload["sequence"] = item.sequence
                    await self.send(item.name, payload)
            if (ended := guard.ended) is not None:
                await self.send(
                    "error", {"code": ended.code, "message": ended.message, topic: an_id}
                )
        finally:
            if self.subscriptions.get(key) is asyncio.current_task():
                del self.subscriptions[key]


async def import_feed(gateway: Gateway, import_id: str) -> AsyncIterator[Item]:
    """An import's ``status``, its live ``progress``, then ``complete`` (with its report) or
    ``error``. The job is read again only when the read model has moved."""
    sub = await gateway.broker.connection.subscribe(d.progress_subject(import_id))
    try:
        position = gateway.runner.position(d.STREAM)
        row = await _import(gateway, import_id)
        yield Item("status", row.public())
        while not row.done:
            try:
                msg = await sub.next_msg(timeout=0.5)
                yield Item("progress", msgspec.json.decode(msg.data))
            except TimeoutError:  # nats' TimeoutError is one too
                pass
            if gateway.runner.position(d.STREAM) != position:
                position = gateway.runner.position(d.STREAM)
                row = await _import(gateway, import_id)
        yield Item("complete" if row.state == "completed" else "error", row.public())
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _import(gateway: Gateway, import_id: str) -> datasets_read.ImportRow:
    async with session(gateway.engine) as db:
        row = await datasets_read.get_import(db, import_id=import_id)
    if row is None:
        raise access.missing("import", import_id)
    return row


# --- the client's messages --------------------------------------------------------------------


def _parse(text: str | None) -> tuple[str, dict[str, Any]]:
    """A client message's ``type`` and ``payload``, or ``Refused`` saying what is wrong."""
    if text is None:
        raise Refused(BAD_MESSAGE, "send text frames of JSON, not binary ones")
    if len(text) > MESSAGE_MAX:
        raise Refused(BAD_MESSAGE, f"a message holds at most {MESSAGE_MAX} characters")
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise Refused(BAD_MESSAGE, "a message is a JSON object {type, payload}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise Refused(BAD_MESSAGE, "a message is a JSON object {type, payload}", field="type")
    payload = message.get("payload", {})
    if not isinstance(payload, dict):
        raise Refused(BAD_MESSAGE, "payload must be a JSON object", field="payload")
    return message["type"], payload


def _topic(payload: dict[str, Any]) -> tuple[str, str]:
    """The one id a (un)subscription names, and its field."""
    named = [topic for topic in TOPICS if topic in payload]
    if len(named) != 1:
        raise Refused(BAD_MESSAGE, "name exactly one of run_id, import_id, experiment_id")
    topic, an_id = named[0], payload[named[0]]
    if not isinstance(an_id, str) or not _valid(an_id):
        raise Refused(common.NOT_FOUND, f"{topic.removesuffix('_id')} {an_id!r} does not exist")
    return topic, an_id


def _after(payload: dict[str, Any]) -> int:
    after = payload.get("last_event_id", 0)
    if isinstance(after, str) and after.isascii() and after.isdigit() and len(after) <= 18:
        after = int(after)
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 10**18:
        raise Refused(BAD_MESSAGE, "last_event_id is a stream sequence", field="last_event_id")
    return after


def _reason(exc: ApiError | HTTPException) -> tuple[str, str]:
    if isinstance(exc, HTTPException):
        return "UNAUTHENTICATED", str(exc.detail)
    return exc.code, exc.message


def _valid(an_id: str) -> bool:
    try:
        check_id(an_id)
    except ValueError:
        return False
    return True

"""The gateway's ports in one object: the bus, the read model, idempotency keys."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import Message
from contracts.common import CommandAccepted, CommandRejected
from services.gateway.envelope import REQUEST_ID, ApiError, ok
from services.gateway.idempotency import Idempotency
from services.kernel import bus
from services.kernel.lease import Leases
from services.kernel.projection import ProjectionRunner
from services.kernel.settings import Settings
from services.kernel.sqlite import session
from services.kernel.transient import TRANSIENT

R = TypeVar("R")
log = logging.getLogger(__name__)

#: How long a read waits for the read model to show an aggregate's latest event.
FRESH_WAIT_S = 2.0
#: What a pending answer asks a client to wait before it reads its ``Location``: the read
#: model, behind for longer than ``read_your_writes_timeout``, is busy or reconnecting.
PENDING_RETRY_S = 1


class LatestProgress:
    """A bounded map of the last progress message per job, fed by a live subscription."""

    def __init__(self, size: int = 1000) -> None:
        self._latest: OrderedDict[str, bytes] = OrderedDict()
        self._size = size

    def put(self, key: str, data: bytes) -> None:
        self._latest[key] = data
        self._latest.move_to_end(key)
        while len(self._latest) > self._size:
            self._latest.popitem(last=False)

    def get(self, key: str) -> bytes | None:
        return self._latest.get(key)


@dataclass
class Gateway:
    settings: Settings
    broker: NatsBroker
    engine: AsyncEngine
    runner: ProjectionRunner
    idempotency: Idempotency
    leases: Leases
    #: The latest live progress of each running import, as its service last published it.
    progress: LatestProgress = field(default_factory=lambda: LatestProgress())

    @property
    def js(self) -> JetStreamContext:
        return self.broker.connection.jetstream()

    async def send(self, subject: str, command: Message, request: Request) -> CommandAccepted:
        """Send a command to its service; a refusal becomes an ``ApiError``."""
        return await self.ask(subject, command, CommandAccepted, request)

    async def ask(
        self,
        subject: str,
        message: Message,
        reply_type: type[R],
        request: Request,
        timeout: float | None = None,
    ) -> R:
        """The one way to a service: a command or a query, with the request id and the trace
        (the request's span's, see ``tracing_http``), a restarting service waited for; a
        refusal or no answer becomes an ``ApiError``."""
        headers = {"Studio-Request-Id": REQUEST_ID.get()}
        reply = await bus.query(
            self.broker,
            subject,
            message,
            reply_type,
            timeout=timeout or self.settings.request_timeout,
            headers=headers,
            responder_wait=self.settings.responder_wait,
        )
        if isinstance(reply, CommandRejected):
            raise ApiError(reply.code, reply.message, field=reply.field, status=reply.status)
        return reply

    async def fresh(self, stream: str, subject: str) -> None:
        """Let the read model apply what ``subject`` holds now, so that a client which saw an
        event on a stream and then asks for the aggregate sees it reflected (bounded wait).

        A read answers from the read model whatever happens here: with no event on ``subject``
        there is nothing to wait for, and a NATS outage only costs freshness (logged); any
        other failure is a bug and raised."""
        try:
            last = await self.js.get_last_msg(stream, subject, direct=True)
        except NotFoundError:
            return
        except TRANSIENT as exc:
            log.warning("last event of %s unread (%r); answering as it is", subject, exc)
            return
        await self.runner.wait_for(stream, int(last.seq or 0), FRESH_WAIT_S)

    async def current(self, timeout: float = FRESH_WAIT_S) -> bool:
        """Let the read model apply everything stored now (bounded wait): a page opened right
        after its reader saw an event on a live stream (a run completed) must show it. A NATS
        outage only costs freshness, as for ``fresh``. Whether it caught up in time."""
        try:
            return await asyncio.wait_for(self.runner.caught_up(timeout), timeout)
        except TimeoutError:
            return False
        except TRANSIENT as exc:
            log.warning("streams' positions unread (%r); answering as it is", exc)
            return False

    async def caught_up(self, stream: str, sequence: int) -> bool:
        """Read-your-writes: wait until the read model shows ``stream`` up to ``sequence``."""
        return await self.runner.wait_for(stream, sequence, self.settings.read_your_writes_timeout)


def pending(
    data: dict[str, Any], *, location: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The answer to a command that is accepted (its events are stored) while the read model
    has not shown them within ``caught_up``'s wait: 202 with ``pending: true``, what the command
    itself says of the result (its id at least), where to read it (``Location``) and when
    (``Retry-After``). Never a 404 for what was just made, nor stale data shown as the result;
    and no 503, which would tell a client without an ``Idempotency-Key`` to send it again."""
    extra = {"Retry-After": str(PENDING_RETRY_S), **(headers or {})}
    if location is not None:
        extra["Location"] = location
    return ok(data | {"pending": True}, status=202, headers=extra)


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with session(get_gateway(request).engine) as db:
        yield db


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
DbDep = Annotated[AsyncSession, Depends(get_db)]

"""Queries between services: an endpoint that always answers, and a client that reads a paged
query to its end.

A paged query is a ``Message`` with an ``after`` field (the cursor: "" for the first page) whose
reply has ``items`` and ``next`` (the following page's ``after``; None after the last page).
Pages keep every reply well under NATS's payload limit however much there is to read.

Knows no context: imports ``contracts``'s envelope and common replies and ``services.kernel``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from faststream.nats import NatsBroker, NatsResponse
from faststream.nats.annotations import NatsMessage

from contracts import Message
from contracts.common import INTERNAL, UNAVAILABLE, VALIDATION_ERROR, CommandRejected
from services.kernel import bus
from services.kernel.domain import Refused
from services.kernel.logs import request_scope
from services.kernel.transient import TRANSIENT, retry_transient

log = logging.getLogger(__name__)
Q = TypeVar("Q", bound=Message)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: How long a page waits for its service (restarting) or for NATS (reconnecting).
PAGE_RETRY_S = 30.0


class Page(Protocol[T_co]):
    @property
    def items(self) -> Sequence[T_co]: ...

    @property
    def next(self) -> str | None: ...


def query_endpoint(
    service: str, query_type: type[Q], handle: Callable[[Q, Mapping[str, str]], Awaitable[Any]]
) -> Callable[[NatsMessage], Awaitable[NatsResponse]]:
    """Wrap a query handler: decode, delegate, always reply. A query that cannot be decoded is
    answered VALIDATION_ERROR, NATS out of reach UNAVAILABLE (a retry may succeed), any other
    failure INTERNAL."""
    decoder = msgspec.json.Decoder(query_type)
    name = query_type.__name__

    async def endpoint(msg: NatsMessage) -> NatsResponse:
        with request_scope(msg.headers), bus.serving("query", name, msg.headers):
            # the lines it logs name the gateway's request, and the span
            return bus.traced_reply(await answer(msg))

    async def answer(msg: NatsMessage) -> bytes:
        started = time.perf_counter()
        reply: Any
        try:
            reply = await handle(decoder.decode(msg.body), msg.headers or {})
        except msgspec.ValidationError as exc:
            reply = CommandRejected(code=VALIDATION_ERROR, message=str(exc))
        except TRANSIENT as exc:
            log.warning("%s waits for NATS (%r)", name, exc)
            reply = CommandRejected(code=UNAVAILABLE, message=f"NATS is unreachable: {exc!r}")
        except Exception:
            log.exception("%s failed", name)
            reply = CommandRejected(code=INTERNAL, message=f"{name} failed unexpectedly")
        return bus.counted_reply(service, name, started, reply, "answered")

    endpoint.__name__ = f"answer_{name}"
    return endpoint


async def collect(
    broker: NatsBroker,
    subject: str,
    first: Message,
    reply_type: type[Page[T]],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    retry_for: float = PAGE_RETRY_S,
) -> list[T]:
    """Every item of a paged query, page after page from ``first``. A refusal is raised as
    ``Refused`` (its code and message); a service or NATS out of reach past ``retry_for`` raises
    the transient error, for the caller to treat as an outage rather than a fault."""
    items: list[T] = []
    query: Any = first
    while True:

        async def ask(q: Message = query) -> Page[T]:
            return await _page(broker, subject, q, reply_type, headers, timeout)

        page = await retry_transient(ask, what=f"asking {subject}", retry_for=retry_for)
        items.extend(page.items)
        if page.next is None:
            return items
        query = msgspec.structs.replace(query, after=page.next)


async def _page(
    broker: NatsBroker,
    subject: str,
    query: Message,
    reply_type: type[Page[T]],
    headers: Mapping[str, str] | None,
    timeout: float,
) -> Page[T]:
    msg = await bus.ask(
        broker.connection,
        subject,
        msgspec.json.encode(query),
        timeout=timeout,
        headers=headers,
        name=type(query).__name__,
    )
    reply = bus.reply_decoder(reply_type).decode(msg.data)
    if isinstance(reply, CommandRejected):
        if reply.code == UNAVAILABLE:  # the service's own NATS calls failed: worth a retry
            raise TimeoutError(reply.message)
        raise Refused(reply.code, reply.message, reply.field)
    return reply


class PagedQuery(Generic[T]):
    """A paged query bound to its subject and reply type: ``await paged(first)`` is every item
    (see ``collect``)."""

    def __init__(self, broker: NatsBroker, subject: str, reply_type: type[Page[T]]) -> None:
        self.broker, self.subject, self.reply_type = broker, subject, reply_type

    async def __call__(self, first: Message, headers: Mapping[str, str] | None = None) -> list[T]:
        return await collect(self.broker, self.subject, first, self.reply_type, headers=headers)

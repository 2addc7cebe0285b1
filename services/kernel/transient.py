"""Riding out a NATS outage: which failures are transient, and a bounded retry with backoff.

A NATS server restarting (or a JetStream leader election) makes calls time out, find no
responder, or meet a connection that is reconnecting; the client reconnects by itself, so such a
call is worth trying again for a while. In a cluster, while a stream has no leader or a node is
down, JetStream also answers "no response from stream" (a publish nobody stored), a 500 (stream
or consumer offline, not the leader) or "no suitable peers" (a replicated asset created while a
node is down): all pass once the election ends or the node is back. Anything else (a refusal, a
bad request, a bug) is raised at once. Imports nats-py only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import (
    BadRequestError,
    NoStreamResponseError,
    ServerError,
    ServiceUnavailableError,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Failures of reaching NATS or JetStream, not of the call itself.
TRANSIENT: tuple[type[Exception], ...] = (
    NatsTimeoutError,
    NoRespondersError,
    ServiceUnavailableError,
    ConnectionClosedError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
    TimeoutError,
    NoStreamResponseError,
    ServerError,
)
#: JetStream's "no suitable peers for placement" (a replicated stream, consumer or bucket made
#: while too few nodes are up): a 400 that passes once the node is back.
NO_PEERS = 10005

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0


async def retry_transient(call: Callable[[], Awaitable[T]], *, what: str, retry_for: float) -> T:
    """``await call()`` until it succeeds; a transient failure is retried with a doubling delay
    (0.1 s up to 2 s) for up to ``retry_for`` seconds, then raised. ``call`` must be safe to
    repeat: a read, or a write that the server recognises when it sees it twice."""
    deadline = time.monotonic() + retry_for
    delay = FIRST_DELAY_S
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s waits for NATS (%s); retrying in %.1fs", what, _name(exc), delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is NATS or JetStream being out of reach for now (see the module)."""
    if isinstance(exc, BadRequestError):
        return exc.err_code == NO_PEERS
    return isinstance(exc, TRANSIENT)


def _name(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

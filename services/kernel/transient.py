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
#: JetStream's "replicas > 1 not supported in non-clustered mode": a 500 that never passes (a
#: single server does not become a cluster), so it is not retried.
NOT_CLUSTERED = 10074

FIRST_DELAY_S = 0.1
#: The longest wait between two tries. A leader election ends unannounced, so a call waiting
#: on one goes through up to this long after it: a cluster's client-visible outage is the
#: election plus this, at each step of a request that met it (2 s measured ~1.5 s of a 9 s
#: outage on a 3-node cluster). A try costs the server one small request.
MAX_DELAY_S = 0.5
#: While a call keeps waiting, it says so again this often (not at every try).
SAY_AGAIN_S = 5.0


async def retry_transient(call: Callable[[], Awaitable[T]], *, what: str, retry_for: float) -> T:
    """``await call()`` until it succeeds; a transient failure is retried with a doubling delay
    (0.1 s up to ``MAX_DELAY_S``) for up to ``retry_for`` seconds, then raised. ``call`` must
    be safe to repeat: a read, or a write that the server recognises when it sees it twice."""
    started = time.monotonic()
    deadline = started + retry_for
    delay = FIRST_DELAY_S
    said: float | None = None  # when it last said it waits
    while True:
        try:
            result = await call()
        except Exception as exc:
            now = time.monotonic()
            if not is_transient(exc) or now + delay > deadline:
                raise
            if said is None or now - said >= SAY_AGAIN_S:
                log.warning("%s waits for NATS (%s); retrying", what, _name(exc))
                said = now
        else:
            if said is not None:
                log.info("%s went through after %.1fs", what, time.monotonic() - started)
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is NATS or JetStream being out of reach for now (see the module)."""
    if isinstance(exc, BadRequestError):
        return exc.err_code == NO_PEERS
    if isinstance(exc, ServerError) and exc.err_code == NOT_CLUSTERED:
        return False
    return isinstance(exc, TRANSIENT)


def _name(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

"""A pull consumer's fetch bounded in bytes as well as in messages.

nats-py's ``PullSubscription.fetch(batch)`` asks the server for ``batch`` messages whatever
their size: a projector fetching 256 events of a stream whose events are a few hundred KB each
(a dataset's ``ImagesAdded``, 1,000 images each) held every one of an import's batches at once,
so a service's memory grew with the size of the last import. ``fetch`` asks with ``max_bytes``
too (JetStream's pull request field, which nats-py does not send), so that a fetch holds at
most ``max_bytes`` of messages, and a message larger than that alone.

Otherwise it behaves as nats-py's fetch: messages already delivered to the subscription are
taken first, then what the server has now (``no_wait``), else one request that waits up to
``timeout`` for the next message; nothing at all raises nats' ``TimeoutError``. It speaks on the
subscription's own inbox and next-message subject (nats-py keeps them private; the version is
pinned by the lock). Imports nats-py only.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError

#: The server's answer when the next message does not fit in what is left of ``max_bytes``.
TOO_BIG = "Message Size Exceeds MaxBytes"
#: Statuses that end a pull request: no message now, the request expired, a limit reached
#: (plain strings: nats-py's ``StatusCode`` members hash by their names).
_ENDS = {"404", "408", "409"}
_HEARTBEAT, _CONFLICT = "100", "409"


async def fetch(sub: Any, batch: int, max_bytes: int, timeout: float) -> list[Msg]:
    """Up to ``batch`` messages and ``max_bytes`` of them (at least one message) from the pull
    subscription ``sub`` (``JetStreamContext.PullSubscription``)."""
    if delivered := await _delivered(sub, batch):
        return delivered
    started = time.monotonic()
    asked = {"batch": batch, "max_bytes": max_bytes, "no_wait": True}
    got = await _request(sub, asked, batch, timeout)
    if got is None:  # the next message alone is larger than max_bytes: it comes alone
        got = await _request(sub, {"batch": 1, "no_wait": True}, 1, timeout)
    left = timeout - (time.monotonic() - started)
    if not got and left > 0.01:  # nothing now: one request lingers for the next message
        expires = int((left - 0.005) * 1e9)
        got = await _request(sub, {"batch": 1, "expires": expires}, 1, left)
    if not got:
        raise NatsTimeoutError
    return got


async def _delivered(sub: Any, batch: int) -> list[Msg]:
    """What an earlier request delivered after its fetch had returned (statuses dropped)."""
    got: list[Msg] = []
    while sub.pending_msgs and len(got) < batch:
        msg = await _next(sub, 1.0)
        if not _status(msg):
            got.append(msg)
    return got


async def _request(sub: Any, asked: dict[str, Any], batch: int, timeout: float) -> list[Msg] | None:
    """The messages one pull request brings before it ends; None when its first message
    exceeds ``max_bytes`` (nothing was delivered)."""
    await sub._nc.publish(sub._nms, json.dumps(asked).encode(), sub._deliver)
    got: list[Msg] = []
    deadline = time.monotonic() + timeout
    while len(got) < batch:
        try:
            msg = await _next(sub, max(deadline - time.monotonic(), 0.001))
        except NatsTimeoutError:
            break
        status = _status(msg)
        if not status:
            got.append(msg)
        elif status == _HEARTBEAT:
            continue
        elif status == _CONFLICT and not got and _description(msg) == TOO_BIG:
            return None
        elif status in _ENDS:
            break
        else:
            raise APIError.from_msg(msg)
    return got


async def _next(sub: Any, timeout: float) -> Msg:
    """The subscription's next message; raises the cancel of the task that waits for it even
    when the message came in the same turn: nats-py waits with ``asyncio.wait_for``, which on
    Python 3.11 then returns the message and drops the cancel (a projector being stopped at
    that moment would run on for ever, its ``stop`` waiting on it)."""
    msg = await sub._sub.next_msg(timeout=timeout)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return msg


def _status(msg: Msg) -> str | None:
    return (msg.headers or {}).get("Status")


def _description(msg: Msg) -> str:
    return (msg.headers or {}).get("Description", "")

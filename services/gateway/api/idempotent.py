"""Runs a POST route under its ``Idempotency-Key``, if the client sent one.

A job's start (an import, a run, an evaluation, an export) answers 202 once the job exists:
that answer is final and replayed to a retry, and the job's id derives from the key
(``keyed_id``), so even a retry whose first answer was never stored (its gateway died) names
the same job, and the service refuses to start it twice rather than starting a second one.
That refusal (a CONFLICT) is no answer for a retry, though: a route passes ``existing``, which
answers for the job its key names if it exists, and the retry gets the 202 the first request
would have had. The claim is renewed while ``run`` runs (``Idempotency.held``), so that only a
claim whose gateway died is taken over by a retry.

The key's own NATS calls share the request's deadline (``request_timeout`` from its start), so
that a keyed request waits for an unreachable NATS as long as an unkeyed one, then answers 503:
the claim's KV calls once rode out an outage for their own 10 s before the command was sent.
``run`` keeps its own waits (an upload's body, its command's); the answer's storing or the key's
release after it gets what is left, at least ``SETTLE_S``: one KV write when NATS is there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from contracts import common, new_id
from services.gateway.auth.deps import actor_of
from services.gateway.envelope import ApiError
from services.gateway.gateway import Gateway
from services.gateway.idempotency import Claim, derived_id, fingerprint

#: Answers worth replaying to a retry. Others leave the key free to try again: a 503, or a
#: 202 whose result the read model did not show in time (the retry then shows it).
_FINAL = frozenset(range(200, 500)) - {202}
#: A job's start: its 202 says the job exists, as final as a 201.
_JOB_FINAL = frozenset(range(200, 500))
#: What storing a request's answer (or releasing its key) may take past the request's deadline.
SETTLE_S = 2.0
#: The answer for the job a request's key names, or None where there is no such job.
Existing = Callable[[], Awaitable[Response | None]]


def keyed_id(request: Request, purpose: str) -> str:
    """The id of what this request creates (``purpose``: "run", "import"…): derived from its
    ``Idempotency-Key`` when it has one, so that every retry names the same thing."""
    key = request.headers.get("idempotency-key")
    return derived_id(actor_of(request), key, purpose) if key else new_id()


async def idempotent(
    request: Request,
    gateway: Gateway,
    actor: str,
    run: Callable[[], Awaitable[Response]],
    *,
    job: bool = False,
    streamed: bool = False,
    existing: Existing | None = None,
) -> Response:
    """``run`` once per key. ``job``: the route starts a background job (its 202 is kept).
    ``streamed``: the body is an upload read by ``run`` itself; the request is then told
    apart by its path, query and length rather than by its bytes. ``existing``: a job start's
    answer for the job its key names, when the service refuses to start it again."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await run()
    deadline = time.monotonic() + gateway.settings.request_timeout
    if streamed:
        length = request.headers.get("content-length", "")
        body = f"{request.url.query}\n{length}".encode()
    else:
        body = await request.body()
    what = fingerprint(request.method, request.url.path, body)
    claimed = await gateway.idempotency.claim(actor, key, what, deadline - time.monotonic())
    if not isinstance(claimed, Claim):
        status, stored, headers = claimed
        return JSONResponse(stored, status, headers={**headers, "Idempotent-Replayed": "true"})
    try:
        async with gateway.idempotency.held(claimed):
            response = await _started(gateway, run, existing)
    except BaseException:
        await gateway.idempotency.release(claimed, _left(deadline))
        raise
    final = _JOB_FINAL if job else _FINAL
    if response.status_code in final and isinstance(response, JSONResponse):
        keep = {k: v for k, v in response.headers.items() if k.lower() in ("location", "etag")}
        await gateway.idempotency.complete(
            claimed, response.status_code, json.loads(bytes(response.body)), keep, _left(deadline)
        )
    else:
        await gateway.idempotency.release(claimed, _left(deadline))
    return response


def _left(deadline: float) -> float:
    """What the request has left until ``deadline``, at least ``SETTLE_S``."""
    return max(deadline - time.monotonic(), SETTLE_S)


async def _started(
    gateway: Gateway, run: Callable[[], Awaitable[Response]], existing: Existing | None
) -> Response:
    """``run``, or, when the service refuses it because the job its key names exists (a retry
    whose first try started the job and lost its answer), that job's answer."""
    try:
        return await run()
    except ApiError as refused:
        if existing is None or refused.code != common.CONFLICT:
            raise
        await gateway.current()
        answer = await existing()
        if answer is None:
            raise
        return answer

"""Runs a POST route under its ``Idempotency-Key``, if the client sent one."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from services.gateway.gateway import Gateway
from services.gateway.idempotency import Claim, fingerprint

#: Answers worth replaying to a retry. Others leave the key free to try again: a 503, or a
#: 202 whose result the read model did not show in time (the retry then shows it).
_FINAL = frozenset(range(200, 500)) - {202}


async def idempotent(
    request: Request, gateway: Gateway, actor: str, run: Callable[[], Awaitable[Response]]
) -> Response:
    key = request.headers.get("idempotency-key")
    if key is None:
        return await run()
    body = await request.body()
    claimed = await gateway.idempotency.claim(
        actor, key, fingerprint(request.method, request.url.path, body)
    )
    if not isinstance(claimed, Claim):
        status, stored, headers = claimed
        return JSONResponse(stored, status, headers={**headers, "Idempotent-Replayed": "true"})
    try:
        response = await run()
    except BaseException:
        await gateway.idempotency.release(claimed)
        raise
    if response.status_code in _FINAL and isinstance(response, JSONResponse):
        keep = {k: v for k, v in response.headers.items() if k.lower() in ("location", "etag")}
        await gateway.idempotency.complete(
            claimed, response.status_code, json.loads(bytes(response.body)), keep
        )
    else:
        await gateway.idempotency.release(claimed)
    return response

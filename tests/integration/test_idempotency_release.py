"""Releasing an ``Idempotency-Key`` claim on a real JetStream KV bucket when its revision moved
unseen: a heartbeat stored whose reply was lost (a timeout, or the cancel that ends ``held``).

Found by the chaos soak (tests/reliability/test_chaos.py): a start whose service was down
answered 500 instead of 503, because nats-py's ``KeyValue.delete`` reports a wrong expected
revision as a bare ``BadRequestError`` (err_code 10071), which ``release`` did not recognise;
the in-memory KV of tests/unit/gateway/test_idempotency_takeover.py raises the typed error and
could not show it. Imports: services.gateway.idempotency.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from services.gateway.idempotency import Claim, Idempotency, open_store

pytestmark = pytest.mark.integration


async def test_a_claim_whose_heartbeat_was_stored_unseen_is_released(nc: NATS) -> None:
    # given a claimed key whose record was renewed without the claim hearing its new revision
    kv = await open_store(nc.jetstream())
    keys = Idempotency(kv)
    claim = await keys.claim("admin", "k-1", "fingerprint")
    assert isinstance(claim, Claim)
    await kv.update(claim.key, claim.record(), last=claim.revision)
    # when the request fails for a passing reason and its claim is released
    await keys.release(claim)
    # then the key is free: a retry claims it anew
    with pytest.raises(KeyNotFoundError):
        await kv.get(claim.key)
    again = await keys.claim("admin", "k-1", "fingerprint")
    assert isinstance(again, Claim) and again.owner != claim.owner


async def test_a_claim_taken_over_meanwhile_is_left_to_its_taker(nc: NATS) -> None:
    # given a claimed key that another gateway's retry took over
    kv = await open_store(nc.jetstream())
    keys = Idempotency(kv)
    claim = await keys.claim("admin", "k-2", "fingerprint")
    assert isinstance(claim, Claim)
    taker = Claim(claim.key, claim.fingerprint, 0, "another-gateway", claim.claimed_at)
    await kv.update(claim.key, taker.record(), last=claim.revision)
    # when the first claim is released
    await keys.release(claim)
    # then the taker's claim stands
    assert b"another-gateway" in ((await kv.get(claim.key)).value or b"")

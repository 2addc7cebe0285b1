"""The identity service's metrics: each sign-in counted once by outcome (``succeeded``,
``refused`` for a wrong password or an unknown user, ``locked`` for a disabled account), and
each session refreshed, never a refused refresh."""

from __future__ import annotations

import msgspec
import nacl.utils
import pytest
from prometheus_client import REGISTRY

from contracts import identity as c
from contracts.envelope import new_id
from services.identity import domain
from services.identity.handlers import Identity
from services.identity.passwords import SealedArgon2
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from tests.unit.identity.test_identity_handlers import (
    T0,
    CountingHasher,
    create,
    login,
    refused,
)


@pytest.fixture
def identity() -> Identity:
    store = InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
    passwords = SealedArgon2(
        nacl.utils.random(32), CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    return Identity(
        Repository(store, domain.evolve, None), passwords, session_days=14, clock=lambda: T0
    )


def sign_ins() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value("studio_sign_ins_total", {"outcome": outcome}) or 0.0
        for outcome in ("succeeded", "refused", "locked")
    }


def refreshed() -> float:
    return REGISTRY.get_sample_value("studio_sessions_refreshed_total") or 0.0


def grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def test_every_outcome_exists_at_zero_before_any_sign_in():
    for outcome in ("succeeded", "refused", "locked"):
        assert REGISTRY.get_sample_value("studio_sign_ins_total", {"outcome": outcome}) is not None
    assert REGISTRY.get_sample_value("studio_sessions_refreshed_total") is not None


async def test_each_sign_in_is_counted_once_by_its_outcome(identity: Identity) -> None:
    # given ada, and bob whose account is disabled
    await create(identity)
    await create(identity, "bob")
    await identity.handle(c.DisableUser(user_id="bob"), {})
    before = sign_ins()
    # when ada signs in, then fails twice, an unknown and a malformed name try, bob tries
    assert isinstance(await login(identity), c.SessionIssued)
    refused(await login(identity, "ada", "wrong password"))
    refused(await login(identity, "ada", "another wrong one"))
    refused(await login(identity, "nobody"))
    refused(await login(identity, "no.such/name"))
    refused(await login(identity, "bob"))
    # then
    assert grew(before, sign_ins()) == {"succeeded": 1, "refused": 4, "locked": 1}


async def test_a_refresh_counts_only_when_it_issues_a_session(identity: Identity) -> None:
    await create(identity)
    issued = await login(identity)
    assert isinstance(issued, c.SessionIssued)
    refresh = c.RefreshSession(
        user_id="ada", session_id=issued.session_id, refresh_token=issued.refresh_token
    )
    before = refreshed()
    assert isinstance(await identity.handle(refresh, {}), c.SessionIssued)
    assert refreshed() == before + 1
    # a rotated-out token coming back ends the session: refused, not counted
    refused(await identity.handle(msgspec.structs.replace(refresh, message_id=new_id()), {}))
    refused(await identity.handle(msgspec.structs.replace(refresh, user_id="no such"), {}))
    assert refreshed() == before + 1

"""The identity handlers on the in-memory event store with real (cheap) argon2 and sealing:
what each command stores and answers, and that no secret ever reaches an event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nacl.utils
import pytest
from argon2 import PasswordHasher

from contracts import identity as c
from contracts.common import CommandAccepted, CommandRejected
from contracts.envelope import new_id
from services.identity import domain
from services.identity.handlers import Identity
from services.identity.passwords import SealedArgon2, digest
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PASSWORD = "correct horse battery"


class CountingHasher(PasswordHasher):
    """Cheap argon2 that counts its verifies (an unknown user must cost one too)."""

    verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        CountingHasher.verifies += 1
        return super().verify(hash, password)


@pytest.fixture
def store() -> InMemoryEventStore[c.Event]:
    return InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.fixture
def identity(store: InMemoryEventStore[c.Event]) -> Identity:
    hasher = CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
    passwords = SealedArgon2(nacl.utils.random(32), hasher)
    return Identity(
        Repository(store, domain.evolve, None), passwords, session_days=14, clock=lambda: T0
    )


async def events_of(store: InMemoryEventStore[c.Event], user_id: str) -> list[c.Event]:
    return [s.event for s in await store.load(user_id)]


async def create(identity: Identity, user_id: str = "ada", **fields: Any) -> None:
    reply = await identity.handle(c.CreateUser(user_id=user_id, password=PASSWORD, **fields), {})
    assert isinstance(reply, CommandAccepted), reply


async def login(identity: Identity, user_id: str = "ada", password: str = PASSWORD) -> c.Reply:
    command = c.Login(user_id=user_id, password=password, session_id=f"s-{user_id}-{password[:3]}")
    return await identity.handle(command, {})


def refused(reply: c.Reply, code: str = c.INVALID_CREDENTIALS, status: int = 401) -> None:
    assert isinstance(reply, CommandRejected), reply
    assert (reply.code, reply.status) == (code, status)
    if code == c.INVALID_CREDENTIALS:
        assert reply.message == "wrong username or password"


async def test_login_issues_a_session_whose_refresh_token_only_the_reply_holds(
    identity: Identity, store: InMemoryEventStore[c.Event]
) -> None:
    await create(identity, tier="basic")
    issued = await login(identity)
    assert isinstance(issued, c.SessionIssued)
    assert (issued.user_id, issued.site_role, issued.tier) == ("ada", "user", "basic")
    assert issued.refresh_expires_at == T0 + timedelta(days=14)
    assert (issued.version, issued.sequence) == (2, 2)
    started = (await events_of(store, "ada"))[-1]
    assert isinstance(started, c.SessionStarted)
    assert started.refresh_hash == digest(issued.refresh_token)
    assert started.actor == "ada"  # the audit says who signed in


async def test_user_names_are_case_insensitive_at_sign_in(identity: Identity) -> None:
    await create(identity)
    issued = await login(identity, " Ada ")
    assert isinstance(issued, c.SessionIssued) and issued.user_id == "ada"


async def test_a_wrong_password_an_unknown_user_and_a_disabled_one_look_alike(
    identity: Identity,
) -> None:
    await create(identity)
    await create(identity, "bob")
    await identity.handle(c.DisableUser(user_id="bob"), {})
    before = CountingHasher.verifies
    for attempt in [
        login(identity, "ada", "wrong password"),
        login(identity, "nobody"),
        login(identity, "no.such/name"),
        login(identity, "bob"),
    ]:
        refused(await attempt)
    assert CountingHasher.verifies - before == 4  # argon2 ran every time, user or not


async def test_refresh_rotates_and_a_reused_old_token_ends_the_session(
    identity: Identity, store: InMemoryEventStore[c.Event]
) -> None:
    await create(identity)
    first = await login(identity)
    assert isinstance(first, c.SessionIssued)
    refresh = c.RefreshSession(
        user_id="ada", session_id=first.session_id, refresh_token=first.refresh_token
    )
    second = await identity.handle(refresh, {})
    assert isinstance(second, c.SessionIssued)
    assert second.refresh_token != first.refresh_token and second.version == 3
    third = msgspec.structs.replace(refresh, refresh_token=second.refresh_token)
    fourth = await identity.handle(third, {})
    assert isinstance(fourth, c.SessionIssued)
    refused(await identity.handle(msgspec.structs.replace(refresh, user_id="no such"), {}))
    # the rotated-out first token comes back (a new request): it was copied, so the session
    # ends for everyone
    refused(await identity.handle(msgspec.structs.replace(refresh, message_id=new_id()), {}))
    ended = (await events_of(store, "ada"))[-1]
    assert ended == c.SessionEnded(
        user_id="ada", session_id=first.session_id, reason="refresh_token_reused",
        message_id=ended.message_id, causation_id=ended.causation_id, actor="ada",
        occurred_at=ended.occurred_at,
    )  # fmt: skip
    latest = msgspec.structs.replace(refresh, refresh_token=fourth.refresh_token)
    refused(await identity.handle(latest, {}))


async def test_ending_a_session_stops_its_refresh(identity: Identity) -> None:
    await create(identity)
    issued = await login(identity)
    assert isinstance(issued, c.SessionIssued)
    end = c.EndSession(user_id="ada", session_id=issued.session_id)
    assert isinstance(await identity.handle(end, {}), CommandAccepted)
    refresh = c.RefreshSession(
        user_id="ada", session_id=issued.session_id, refresh_token=issued.refresh_token
    )
    refused(await identity.handle(refresh, {}))


async def test_a_password_change_checks_the_current_one_and_revokes_sessions(
    identity: Identity,
) -> None:
    await create(identity)
    issued = await login(identity)
    assert isinstance(issued, c.SessionIssued)
    wrong = c.ChangePassword(user_id="ada", new_password="new password!", current_password="nope")
    refused(await identity.handle(wrong, {}), "VALIDATION_ERROR", 0)
    right = msgspec.structs.replace(wrong, current_password=PASSWORD)
    assert isinstance(await identity.handle(right, {}), CommandAccepted)
    refresh = c.RefreshSession(
        user_id="ada", session_id=issued.session_id, refresh_token=issued.refresh_token
    )
    refused(await identity.handle(refresh, {}))
    refused(await login(identity))
    assert isinstance(await login(identity, password="new password!"), c.SessionIssued)


async def test_an_api_key_is_shown_once_and_stored_as_its_hash(
    identity: Identity, store: InMemoryEventStore[c.Event]
) -> None:
    await create(identity)
    issue = c.IssueApiKey(user_id="ada", key_id="k1", name="ci", expires_at=T0 + timedelta(1))
    created = await identity.handle(issue, {})
    assert isinstance(created, c.ApiKeyCreated)
    prefix, key_id, secret = created.key.split("_", 2)
    assert (prefix, key_id) == ("sk", "k1") and len(secret) >= 43
    assert (created.version, created.expires_at) == (2, T0 + timedelta(1))
    stored = (await events_of(store, "ada"))[-1]
    assert isinstance(stored, c.ApiKeyIssued) and stored.key_hash == digest(secret)
    revoke = c.RevokeApiKey(user_id="ada", key_id="k1")
    assert isinstance(await identity.handle(revoke, {}), CommandAccepted)
    refused(await identity.handle(issue, {}), "CONFLICT", 0)


async def test_no_event_holds_a_password_a_hash_or_a_token(
    identity: Identity, store: InMemoryEventStore[c.Event]
) -> None:
    await create(identity)
    issued = await login(identity)
    assert isinstance(issued, c.SessionIssued)
    change = c.ChangePassword(user_id="ada", new_password="another secret")
    await identity.handle(change, {})
    key = await identity.handle(c.IssueApiKey(user_id="ada", key_id="k1", name="ci"), {})
    assert isinstance(key, c.ApiKeyCreated)
    wire = b"".join(msgspec.json.encode(e) for e in await events_of(store, "ada"))
    for secret in (PASSWORD, "another secret", issued.refresh_token, key.key.split("_", 2)[2]):
        assert secret.encode() not in wire
    assert b"$argon2" not in wire


async def test_the_first_admin_is_created_once_even_by_two_at_once(
    identity: Identity, store: InMemoryEventStore[c.Event]
) -> None:
    outcomes = await asyncio.gather(
        identity.ensure_first_admin(PASSWORD), identity.ensure_first_admin(PASSWORD)
    )
    assert sorted(o or "" for o in outcomes) == ["created", "existed"]
    assert await identity.ensure_first_admin("another password") == "existed"
    (created,) = await events_of(store, "admin")
    assert isinstance(created, c.UserCreated)
    assert (created.site_role, created.tier, created.actor) == ("admin", "premium", "system")
    issued = await login(identity, "admin")
    assert isinstance(issued, c.SessionIssued) and issued.site_role == "admin"


async def test_concurrent_sign_ins_of_one_user_all_succeed_each_verifying_once(
    identity: Identity, store: InMemoryEventStore[c.Event]
) -> None:
    await create(identity)
    before = CountingHasher.verifies
    logins = [
        identity.handle(c.Login(user_id="ada", password=PASSWORD, session_id=f"s{i}"), {})
        for i in range(5)
    ]
    replies = await asyncio.gather(*logins)
    assert all(isinstance(r, c.SessionIssued) for r in replies), replies
    assert CountingHasher.verifies - before == 5  # a retried decision reuses its verdict
    assert len(await events_of(store, "ada")) == 6

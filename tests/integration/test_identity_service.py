"""The identity service as a real process on a real nats-server, asked over NATS as the gateway
asks it: users, sign-in, refresh rotation, sign-out, password change, disabling, API keys, the
first admin (once, even with two instances starting together), the sealing key's file mode,
and that the IDENTITY stream holds no password and no argon2 hash."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from contracts import common
from contracts import identity as c
from contracts.common import CommandAccepted, CommandRejected
from contracts.envelope import new_id
from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedNats

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "first admin's password"
PASSWORD = "ada's long password"
REPLY = msgspec.json.Decoder(c.Reply)
SUBJECT = {
    c.CreateUser: c.Subjects.CREATE_USER,
    c.DisableUser: c.Subjects.DISABLE_USER,
    c.EnableUser: c.Subjects.ENABLE_USER,
    c.ChangePassword: c.Subjects.CHANGE_PASSWORD,
    c.Login: c.Subjects.LOGIN,
    c.RefreshSession: c.Subjects.REFRESH_SESSION,
    c.EndSession: c.Subjects.END_SESSION,
    c.IssueApiKey: c.Subjects.ISSUE_API_KEY,
    c.RevokeApiKey: c.Subjects.REVOKE_API_KEY,
}


class Identity:
    """Instances of the identity service on one workspace, and a client that asks them."""

    nc: NATS

    def __init__(self, root: Path, nats_url: str, nc: NATS | None = None) -> None:
        self.root, self.nats_url = root, nats_url
        if nc is not None:
            self.nc = nc
        self.workspace = root / "workspace"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> None:
        n = len(self.procs)
        log = (self.root / f"identity-{n}.log").open("ab")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.identity"],
                env=os.environ
                | {
                    "STUDIO_NATS_URL": self.nats_url,
                    "STUDIO_WORKSPACE": str(self.workspace),
                    "STUDIO_METRICS_PORT": "-1",
                    "STUDIO_LOG_LEVEL": "WARNING",
                    "STUDIO_INSTANCE": f"identity-{n}",
                    "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    **env,
                },
                stdout=log,
                stderr=log,
            )
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.root.glob("identity-*.log"))

    async def ask(self, command: c.Command) -> c.Reply:
        msg = await self.nc.request(SUBJECT[type(command)], msgspec.json.encode(command), 20)
        return REPLY.decode(msg.data)

    async def accepted(self, command: c.Command) -> CommandAccepted:
        reply = await self.ask(command)
        assert isinstance(reply, CommandAccepted), reply
        return reply

    async def login(self, user: str, password: str, session: str) -> c.Reply:
        return await self.ask(c.Login(user_id=user, password=password, session_id=session))


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await asyncio.sleep(0.1)


async def healthy(identity: Identity, instances: int = 1) -> None:
    """Every instance answers pings (its command subscriptions are in place by then)."""

    async def answered() -> bool:
        for proc in identity.procs:
            assert proc.poll() is None, f"identity exited:\n{identity.log()[-3000:]}"
        return len(await pongs(identity.nc)) >= instances

    await eventually(answered, 60, "identity healthy")


async def pongs(nc: NATS) -> set[str]:
    """The instances that answer one ping within half a second."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    ping = msgspec.json.encode(common.Ping())
    await nc.publish(common.health_subject("identity"), ping, reply=inbox)
    seen: set[str] = set()
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            if not msg.data:  # "no responders": nobody listens yet
                continue
            seen.add(msgspec.json.decode(msg.data, type=common.Pong).instance)
    except nats.errors.TimeoutError:
        return seen
    finally:
        await sub.unsubscribe()


async def stream_payloads(nc: NATS) -> list[bytes]:
    """Every message the IDENTITY stream holds, in order."""
    js = nc.jetstream()
    info = await js.stream_info(c.STREAM)
    return [
        (await js.get_msg(c.STREAM, seq)).data or b""
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    srv = nats_server.start(tmp_path_factory.mktemp("identity-nats"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def running(server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Identity]:
    """One identity instance the module's tests share (each test uses its own users)."""
    service = Identity(tmp_path_factory.mktemp("identity"), server.url)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def identity(running: Identity) -> AsyncIterator[Identity]:
    running.nc = await nats.connect(running.nats_url)
    try:
        await healthy(running)
        yield running
    finally:
        await running.nc.close()


def refused(reply: c.Reply, code: str = c.INVALID_CREDENTIALS, status: int = 401) -> None:
    assert isinstance(reply, CommandRejected), reply
    assert (reply.code, reply.status) == (code, status), reply
    if code == c.INVALID_CREDENTIALS:
        assert reply.message == "wrong username or password"


# --- users and sign-in --------------------------------------------------------------------------


async def test_create_a_user_and_sign_in(identity: Identity) -> None:
    created = await identity.accepted(c.CreateUser(user_id="ada", password=PASSWORD, tier="basic"))
    assert created.version == 1
    refused(await identity.ask(c.CreateUser(user_id="ada", password=PASSWORD)), "CONFLICT", 0)
    issued = await identity.login("ada", PASSWORD, "s-ada-1")
    assert isinstance(issued, c.SessionIssued), issued
    assert (issued.user_id, issued.site_role, issued.tier) == ("ada", "user", "basic")
    assert issued.version == 2 and issued.sequence > created.sequence
    assert len(issued.refresh_token) >= 43


async def test_wrong_password_unknown_and_malformed_users_are_refused_alike(
    identity: Identity,
) -> None:
    await identity.accepted(c.CreateUser(user_id="bea", password=PASSWORD))
    refused(await identity.login("bea", "not the password", "s-bea-x"))
    refused(await identity.login("nobody-here", PASSWORD, "s-nobody"))
    refused(await identity.login("not.a/name", PASSWORD, "s-bad"))


async def test_a_password_that_is_too_short_is_a_validation_error(identity: Identity) -> None:
    reply = await identity.ask(c.CreateUser(user_id="short", password="1234567"))
    refused(reply, "VALIDATION_ERROR", 0)
    assert isinstance(reply, CommandRejected) and "password" in reply.message


async def test_refresh_rotates_and_a_reused_old_token_ends_the_session(identity: Identity) -> None:
    await identity.accepted(c.CreateUser(user_id="cy", password=PASSWORD))
    first = await identity.login("cy", PASSWORD, "s-cy-1")
    assert isinstance(first, c.SessionIssued)
    refresh = c.RefreshSession(user_id="cy", session_id="s-cy-1", refresh_token=first.refresh_token)
    second = await identity.ask(refresh)
    assert isinstance(second, c.SessionIssued), second
    assert second.refresh_token != first.refresh_token
    assert second.refresh_expires_at >= first.refresh_expires_at
    # the rotated-out token comes back (a new request): it was copied, so the session ends
    refused(await identity.ask(msgspec.structs.replace(refresh, message_id=new_id())))
    current = msgspec.structs.replace(refresh, refresh_token=second.refresh_token)
    refused(await identity.ask(current))
    msg = await identity.nc.jetstream().get_last_msg(c.STREAM, c.event_subject("cy"))
    assert msg.data is not None
    ended = msgspec.json.decode(msg.data, type=c.SessionEnded)
    assert (ended.session_id, ended.reason) == ("s-cy-1", "refresh_token_reused")


async def test_an_ended_session_no_longer_refreshes(identity: Identity) -> None:
    await identity.accepted(c.CreateUser(user_id="dee", password=PASSWORD))
    issued = await identity.login("dee", PASSWORD, "s-dee-1")
    assert isinstance(issued, c.SessionIssued)
    await identity.accepted(c.EndSession(user_id="dee", session_id="s-dee-1"))
    refresh = c.RefreshSession(
        user_id="dee", session_id="s-dee-1", refresh_token=issued.refresh_token
    )
    refused(await identity.ask(refresh))
    await identity.accepted(c.EndSession(user_id="dee", session_id="s-dee-1"))  # twice is fine


async def test_a_password_change_revokes_sessions_and_the_old_password(identity: Identity) -> None:
    await identity.accepted(c.CreateUser(user_id="eve", password=PASSWORD))
    issued = await identity.login("eve", PASSWORD, "s-eve-1")
    assert isinstance(issued, c.SessionIssued)
    wrong = c.ChangePassword(user_id="eve", new_password="eve's new password", current_password="x")
    refused(await identity.ask(wrong), "VALIDATION_ERROR", 0)
    await identity.accepted(msgspec.structs.replace(wrong, current_password=PASSWORD))
    refresh = c.RefreshSession(
        user_id="eve", session_id="s-eve-1", refresh_token=issued.refresh_token
    )
    refused(await identity.ask(refresh))
    refused(await identity.login("eve", PASSWORD, "s-eve-2"))
    assert isinstance(await identity.login("eve", "eve's new password", "s-eve-3"), c.SessionIssued)


async def test_a_disabled_user_can_neither_sign_in_nor_refresh(identity: Identity) -> None:
    await identity.accepted(c.CreateUser(user_id="fay", password=PASSWORD))
    issued = await identity.login("fay", PASSWORD, "s-fay-1")
    assert isinstance(issued, c.SessionIssued)
    await identity.accepted(c.DisableUser(user_id="fay"))
    refused(await identity.login("fay", PASSWORD, "s-fay-2"))
    refresh = c.RefreshSession(
        user_id="fay", session_id="s-fay-1", refresh_token=issued.refresh_token
    )
    refused(await identity.ask(refresh))
    await identity.accepted(c.EnableUser(user_id="fay"))
    refused(await identity.ask(refresh))  # enabling again does not bring sessions back
    assert isinstance(await identity.login("fay", PASSWORD, "s-fay-3"), c.SessionIssued)


async def test_an_api_key_is_issued_once_stored_hashed_and_revoked(identity: Identity) -> None:
    await identity.accepted(c.CreateUser(user_id="gus", password=PASSWORD))
    created = await identity.ask(c.IssueApiKey(user_id="gus", key_id="k1", name="ci"))
    assert isinstance(created, c.ApiKeyCreated), created
    prefix, key_id, secret = created.key.split("_", 2)
    assert (prefix, key_id, created.expires_at) == ("sk", "k1", None)
    msg = await identity.nc.jetstream().get_last_msg(c.STREAM, c.event_subject("gus"))
    assert msg.data is not None
    stored = msgspec.json.decode(msg.data, type=c.ApiKeyIssued)
    assert stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in msg.data.decode()
    await identity.accepted(c.RevokeApiKey(user_id="gus", key_id="k1"))
    reissue = await identity.ask(c.IssueApiKey(user_id="gus", key_id="k1", name="again"))
    refused(reissue, "CONFLICT", 0)
    refused(await identity.ask(c.RevokeApiKey(user_id="gus", key_id="k9")), "NOT_FOUND", 0)


async def test_the_first_admin_exists_and_signs_in(identity: Identity) -> None:
    issued = await identity.login("admin", ADMIN_PASSWORD, "s-admin-1")
    assert isinstance(issued, c.SessionIssued), issued
    assert (issued.site_role, issued.tier) == ("admin", "premium")


async def test_no_event_holds_a_password_or_an_argon2_hash(identity: Identity) -> None:
    await identity.accepted(c.CreateUser(user_id="hal", password=PASSWORD))
    await identity.accepted(c.ChangePassword(user_id="hal", new_password="hal's second password"))
    payloads = await stream_payloads(identity.nc)
    assert any(b"identity.user_created.v1" in p for p in payloads)
    for payload in payloads:
        for secret in (PASSWORD, "hal's second password", ADMIN_PASSWORD, "$argon2"):
            assert secret.encode() not in payload, payload


# --- the first admin and the key, with two instances at once ------------------------------------


async def test_two_instances_starting_together_create_the_first_admin_once(
    nats_srv: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    identity = Identity(tmp_path, nats_srv.url, nc)
    identity.start()
    identity.start()
    try:
        await healthy(identity, instances=2)
        marker = identity.workspace / "identity" / "admin.created"

        async def marked() -> bool:
            return marker.exists() and json.loads(marker.read_text())["outcome"] == "created"

        await eventually(marked, 30, "the admin marker")
        admins = [
            p
            for p in await stream_payloads(nc)
            if b"identity.user_created.v1" in p and b"admin" in p
        ]
        assert len(admins) == 1
        issued = await identity.login("admin", ADMIN_PASSWORD, "s-admin-1")
        assert isinstance(issued, c.SessionIssued), issued
        for proc in identity.procs:
            assert proc.poll() is None, identity.log()
    finally:
        identity.stop()
    key = identity.workspace / "identity" / "seal.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["admin.created", "seal.key"]


async def test_a_named_key_file_is_used_and_seals_survive_a_restart(
    nats_srv: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    key = tmp_path / "my.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    identity = Identity(tmp_path, nats_srv.url, nc)
    env: dict[str, Any] = {"STUDIO_IDENTITY_KEY_FILE": str(key)}
    identity.start(**env)
    try:
        await healthy(identity)
        await identity.accepted(c.CreateUser(user_id="ivy", password=PASSWORD))
    finally:
        identity.stop()
    identity.procs.clear()
    identity.start(**env)
    try:
        await healthy(identity)
        assert isinstance(await identity.login("ivy", PASSWORD, "s-ivy-1"), c.SessionIssued)
    finally:
        identity.stop()
    assert not (identity.workspace / "identity" / "seal.key").exists()


def test_a_first_admin_password_too_short_stops_the_service_with_a_message(
    nats_srv: EmbeddedNats, tmp_path: Path
) -> None:
    identity = Identity(tmp_path, nats_srv.url)
    identity.start(STUDIO_ADMIN_PASSWORD="short")
    try:
        code = identity.procs[0].wait(60)
    finally:
        identity.stop()
    assert code != 0
    log = identity.log()
    assert "STUDIO_ADMIN_PASSWORD must be 8 to 256 characters long" in log
    assert "Traceback" not in log

"""Each service on the bus with its own credentials: the real nats-server refuses what a user's
permissions do not allow (a publish, a subscribe, a JetStream API call), and a client without
credentials gets nothing at all."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
import nkeys
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from contracts import common
from contracts import exports as x
from contracts import projects as p
from contracts import training as t
from services import bus_access
from services.kernel import nats_server, natsauth
from services.kernel.bus import NatsUnavailable, connect, make_broker, service_broker, stop_broker
from services.kernel.nats_server import EmbeddedNats
from services.kernel.settings import Settings

pytestmark = pytest.mark.integration
DENIED_WAIT_S = 10.0


@dataclass
class Client:
    """A raw NATS connection as one of the deployment's users, and the errors NATS sent it."""

    nc: NATS
    errors: list[str] = field(default_factory=list)

    async def refused(self, words: str) -> str:
        """The error NATS sent about ``words`` (waits for it, the server answers async)."""
        deadline = time.monotonic() + DENIED_WAIT_S
        while time.monotonic() < deadline:
            found = [e for e in self.errors if words.lower() in e]
            if found:
                return found[0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no refusal about {words!r}; errors: {self.errors}")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
def bus(tmp_path: Path, workspace: Path) -> Iterator[EmbeddedNats]:
    """A server admitting the deployment's users, its event streams created."""
    server = nats_server.start(tmp_path / "nats", access=bus_access.access(workspace))
    bus_access.provision_now(server.operator_url)
    yield server
    server.stop()


@pytest.fixture
async def operator(bus: EmbeddedNats) -> AsyncIterator[NATS]:
    nc = await nats.connect(bus.operator_url)
    yield nc
    await nc.close()


@pytest.fixture
async def as_user(bus: EmbeddedNats, workspace: Path) -> AsyncIterator[object]:
    opened: list[NATS] = []

    async def open_as(user: str) -> Client:
        seed = natsauth.seed_path(natsauth.secrets_dir(workspace), user)
        client = Client(nc=NATS())

        async def on_error(exc: Exception) -> None:
            client.errors.append(str(exc).lower())

        await client.nc.connect(bus.url, error_cb=on_error, **natsauth.client_options(seed, user))
        opened.append(client.nc)
        return client

    yield open_as
    for nc in opened:
        await nc.close()


async def test_the_gateway_cannot_append_an_event(as_user, operator: NATS, bus) -> None:
    # given the gateway's credentials
    gateway = await as_user("gateway")
    subject = p.event_subject(uuid.uuid4().hex)
    # when it appends an event to a project's stream
    with pytest.raises((NatsTimeoutError, TimeoutError)):
        await gateway.nc.jetstream(timeout=1.0).publish(subject, b"{}")
    # then the server refuses the publish, says so in its log, and the stream holds nothing
    assert "publish" in await gateway.refused(f'"{subject}"')
    info = await operator.jetstream().stream_info(p.STREAM, subjects_filter=subject)
    assert not info.state.subjects
    assert f'Publish Violation - Subject "{subject}"' in bus.log_path.read_text()


async def test_the_gateway_cannot_create_purge_or_delete_a_stream(as_user, operator) -> None:
    # given the gateway's credentials
    js = (await as_user("gateway")).nc.jetstream(timeout=1.0)
    # when it creates a stream, deletes an event stream, purges one
    for attempt in (
        js.add_stream(name="ROGUE", subjects=["rogue.>"]),
        js.add_stream(name=x.STREAM, subjects=[x.EVENTS]),
        js.delete_stream(p.STREAM),
        js.purge_stream(t.STREAM),
    ):
        with pytest.raises((NatsTimeoutError, TimeoutError)):
            await attempt
    # then none of it happened: no new stream, the event streams are all there
    ops = operator.jetstream()
    with pytest.raises(NotFoundError):
        await ops.stream_info("ROGUE")
    for stream in (p.STREAM, t.STREAM, x.STREAM):
        assert (await ops.stream_info(stream)).config.name == stream


async def test_the_gateway_sends_commands_and_reads_events(as_user, operator: NATS) -> None:
    # given a project event in the stream, and a projects service answering its commands
    projects = await as_user("projects")
    subject = p.event_subject(uuid.uuid4().hex)
    ack = await projects.nc.jetstream().publish(subject, b'{"x": 1}')

    async def answer(msg) -> None:
        await msg.respond(b"accepted")

    await projects.nc.subscribe(p.Subjects.CREATE, queue="projects", cb=answer)
    await projects.nc.flush()
    gateway = await as_user("gateway")
    # when the gateway sends a command and reads the event back
    reply = await gateway.nc.request(p.Subjects.CREATE, b"{}", timeout=5)
    msg = await gateway.nc.jetstream().get_last_msg(p.STREAM, subject, direct=True)
    # then both are allowed
    assert reply.data == b"accepted"
    assert msg.seq == ack.seq
    assert not gateway.errors and not projects.errors


async def test_the_trainer_cannot_append_to_the_projects_stream(as_user, operator) -> None:
    # given the trainer's credentials
    trainer = await as_user("trainer")
    foreign = p.event_subject(uuid.uuid4().hex)
    # when it appends to a project's subject, then refused; to a run's subject, then stored
    with pytest.raises((NatsTimeoutError, TimeoutError)):
        await trainer.nc.jetstream(timeout=1.0).publish(foreign, b"{}")
    assert "publish" in await trainer.refused(f'"{foreign}"')
    own = await trainer.nc.jetstream().publish(t.event_subject(uuid.uuid4().hex), b"{}")
    assert own.stream == t.STREAM
    info = await operator.jetstream().stream_info(p.STREAM, subjects_filter=foreign)
    assert not info.state.subjects


async def test_a_service_cannot_serve_another_services_commands(as_user, operator) -> None:
    # given the trainer's credentials
    trainer = await as_user("trainer")
    # when it subscribes to the projects service's command subject
    await trainer.nc.subscribe(p.Subjects.CREATE, queue="projects")
    await trainer.nc.flush()
    # then the server refuses the subscription: a command sent there reaches no one
    assert "subscription" in await trainer.refused(f'"{p.Subjects.CREATE}"')
    with pytest.raises(NoRespondersError):
        await operator.request(p.Subjects.CREATE, b"{}", timeout=2)


async def test_no_user_reads_another_users_replies(as_user) -> None:
    # given the gateway's credentials
    gateway = await as_user("gateway")
    # when it listens to every inbox, or to the trainer's
    for inbox in ("_INBOX.>", f"{natsauth.inbox_prefix('trainer')}.>", ">"):
        await gateway.nc.subscribe(inbox)
        await gateway.nc.flush()
        # then refused
        assert "subscription" in await gateway.refused(f'"{inbox}"')


async def test_a_client_without_credentials_is_refused(bus: EmbeddedNats, tmp_path) -> None:
    # given no credentials, a seed of no known user, a wrong operator password
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    attempts: list[dict[str, object]] = [
        {"servers": bus.url},
        {"servers": bus.url, "nkeys_seed": str(stranger)},
        {"servers": f"nats://operator:{secrets.token_urlsafe(8)}@127.0.0.1:{bus.port}"},
    ]
    for options in attempts:
        # when it connects, then it is refused
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(**options, allow_reconnect=False, connect_timeout=5)  # type: ignore[arg-type]


async def test_a_service_refused_says_so(bus: EmbeddedNats) -> None:
    # given a service started with no credentials against the studio's server
    broker = make_broker(bus.url, name="projects@test")
    # when it connects, then it ends with a message naming the refusal, not "unreachable"
    with pytest.raises(NatsUnavailable, match="refused the credentials"):
        await connect(broker, bus.url, timeout=5)
    await stop_broker(broker)


async def test_a_service_connects_with_the_credentials_file_it_is_given(
    bus: EmbeddedNats, workspace: Path, tmp_path: Path
) -> None:
    # given a service elsewhere (a workspace of its own, no secrets in it), handed its seed
    # as STUDIO_NATS_CREDS
    seed = natsauth.seed_path(natsauth.secrets_dir(workspace), "projects")
    settings = Settings(nats_url=bus.url, nats_creds=seed, workspace=tmp_path / "elsewhere")
    broker = service_broker(settings, "projects")
    # when it connects, then it is in as the projects service: it appends a project's event
    await connect(broker, bus.url, timeout=10)
    try:
        ack = await broker.connection.jetstream().publish(p.event_subject(uuid.uuid4().hex), b"{}")
        assert ack.stream == p.STREAM
    finally:
        await stop_broker(broker)


async def test_a_services_container_pings_it_with_its_own_credentials(
    bus: EmbeddedNats, as_user, workspace: Path, tmp_path: Path
) -> None:
    # given the projects service answering its health (as a cluster runs it, with its seed)
    projects = await as_user("projects")
    pong = common.Pong(service="projects", instance="p-1", started_at="now")

    async def answer(msg) -> None:
        await msg.respond(msgspec.json.encode(pong))

    await projects.nc.subscribe(common.health_subject("projects"), cb=answer)
    await projects.nc.flush()
    # when `studio ping projects` runs beside it with only STUDIO_NATS_CREDS (a healthcheck)
    seed = natsauth.seed_path(natsauth.secrets_dir(workspace), "projects")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env |= {
        "STUDIO_NATS_URL": bus.url,
        "STUDIO_NATS_CREDS": str(seed),
        "STUDIO_WORKSPACE": str(tmp_path / "elsewhere"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "ping",
        "projects",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    # then it is answered
    assert proc.returncode == 0, out.decode()
    assert "projects: ok (instance p-1)" in out.decode()


def test_credentials_are_private_and_generated_once(tmp_path: Path, workspace: Path) -> None:
    # given a server started once on a workspace
    access = bus_access.access(workspace)
    server = nats_server.start(tmp_path / "nats", access=access)
    folder = natsauth.secrets_dir(workspace)
    first = {f.name: f.read_bytes() for f in folder.iterdir()}
    try:
        # then one secret per user and the operator's password, all mode 0600, as is the config
        users = {f"{u.name}.nk" for u in bus_access.USERS}
        assert set(first) == users | {"operator.password"}
        for f in [*folder.iterdir(), tmp_path / "nats" / "nats.conf"]:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        # and the config names public keys only, never a seed
        conf = (tmp_path / "nats" / "nats.conf").read_text()
        assert not any(seed.decode().strip() in conf for seed in first.values() if seed[:1] == b"S")
        # when the server restarts, and when it is started anew on the same workspace
        server.kill()
        server.restart()
        server.stop()
        server = nats_server.start(tmp_path / "nats", access=access)
        # then the secrets are the same, and a service's still gets it in
        assert {f.name: f.read_bytes() for f in folder.iterdir()} == first
        asyncio.run(_connects(server.url, natsauth.seed_path(folder, "exporter"), "exporter"))
    finally:
        server.stop()


async def _connects(url: str, seed: Path, user: str) -> None:
    nc = await nats.connect(url, allow_reconnect=False, **natsauth.client_options(seed, user))
    try:
        await nc.flush(timeout=5)
        assert nc.is_connected
    finally:
        await nc.close()


def test_every_event_stream_has_one_owner() -> None:
    # the table: each stream is appended to by exactly one user, never by the gateway
    owners: dict[str, list[str]] = {}
    for user in bus_access.USERS:
        for stream, subjects in user.owns:
            owners.setdefault(stream, []).append(user.name)
            assert all(s.startswith("evt.") for s in subjects)
    assert {s: len(o) for s, o in owners.items()} == {s.name: 1 for s in bus_access.STREAMS}
    assert not any(s.startswith("evt.") for s in bus_access.GATEWAY_USER.grant().publish)

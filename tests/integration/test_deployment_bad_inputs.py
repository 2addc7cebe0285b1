"""Bad deployment settings of issue 13 (a studio on a NATS cluster) get a clear message and stop
at start, never a minute of retries ending in a traceback: ``STUDIO_STREAM_REPLICAS`` above what
NATS can place (a single server, or more replicas than the cluster has nodes), out of its range
or not a number, and a ``STUDIO_NATS_URL`` that is not a NATS address (a wrong scheme, a port
that is not one). Against a real nats-server and a real 3-node cluster; one service process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import nats
import pytest

from services import supervisor
from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedNats
from services.kernel.settings import Settings
from services.kernel.streams import ReplicasRefused, StreamSpec, ensure_stream

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``STUDIO_*`` variable of the caller's, no ``.env`` of the repository's."""
    for name in list(os.environ):
        if name.startswith("STUDIO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path


def spec() -> StreamSpec:
    name = f"BAD_{uuid.uuid4().hex[:8].upper()}"
    return StreamSpec(name, (f"bad.{name.lower()}.>",))


async def test_replicas_a_single_server_cannot_keep_are_refused_at_once(
    nats_srv: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    # given one nats-server (not a cluster), when a stream is made with three replicas
    nc = await nats.connect(nats_srv.url)
    try:
        with pytest.raises(ReplicasRefused) as refused:
            await ensure_stream(nc.jetstream(), spec(), replicas=3, retry_for=30)
    finally:
        await nc.close()
    # then it is refused at its first answer, not retried as an outage (a single server never
    # becomes a cluster), with the setting to change and why; a message for people (an exit)
    assert "waits for NATS" not in caplog.text
    message = str(refused.value)
    assert "STUDIO_STREAM_REPLICAS=3" in message and "non-clustered" in message
    assert "(1 for a single server)" in message
    assert isinstance(refused.value, SystemExit)


async def test_more_replicas_than_the_cluster_has_nodes_are_refused_naming_the_setting(
    tmp_path: Path,
) -> None:
    # given a 3-node JetStream cluster, when a stream is made with five replicas
    cluster = nats_server.start_cluster(tmp_path / "cluster", 3)
    try:
        nc = await nats.connect([node.url for node in cluster.nodes], connect_timeout=5)
        try:
            stream = spec()
            with pytest.raises(ReplicasRefused) as refused:
                await ensure_stream(nc.jetstream(), stream, replicas=5, retry_for=1)
            # then nothing was made, and three replicas, as many as its nodes, are fine
            with pytest.raises(nats.js.errors.NotFoundError):
                await nc.jetstream().stream_info(stream.name)
            await ensure_stream(nc.jetstream(), stream, replicas=3)
            info = await nc.jetstream().stream_info(stream.name)
            assert info.config.num_replicas == 3
        finally:
            await nc.close()
    finally:
        for node in cluster.nodes:
            node.stop()
    message = str(refused.value)
    assert "STUDIO_STREAM_REPLICAS=5" in message and "no suitable peers" in message
    assert "start the nodes that are down" in message


def test_a_service_with_replicas_its_server_cannot_keep_exits_2_with_the_reason(
    nats_srv: EmbeddedNats, tmp_path: Path
) -> None:
    # given the projects service started with STUDIO_STREAM_REPLICAS=3 against one server
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env |= {"STUDIO_NATS_URL": nats_srv.url, "STUDIO_STREAM_REPLICAS": "3",
            "STUDIO_WORKSPACE": str(tmp_path / "ws"), "STUDIO_METRICS_PORT": "-1",
            "STUDIO_LOG_FORMAT": "text"}  # fmt: skip
    cmd = [sys.executable, "-m", "services.projects"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # then it stops by itself with exit 2 and a line that says what to change, no traceback
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert "STUDIO_STREAM_REPLICAS=3" in out and "Traceback" not in out, out[-3000:]


def test_an_embedded_server_refuses_replicas_before_it_starts(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given `studio up` with no STUDIO_NATS_URL (its own single nats-server) and 3 replicas
    monkeypatch.setenv("STUDIO_STREAM_REPLICAS", "3")
    # when it starts NATS, then it refuses with the reason before starting any server
    with pytest.raises(supervisor.StartupError) as refused:
        supervisor.start_nats(clean_env / "ws")
    assert "STUDIO_STREAM_REPLICAS=3 needs a NATS cluster" in str(refused.value)
    assert not (clean_env / "ws" / "nats").exists()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "greater than or equal to 1"),
        ("6", "less than or equal to 5"),
        ("three", "valid integer"),
    ],
)
def test_replicas_out_of_range_stop_the_process_naming_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("STUDIO_STREAM_REPLICAS", value)
    with pytest.raises(SystemExit) as exited:
        Settings.from_env()
    assert str(exited.value).startswith("STUDIO_STREAM_REPLICAS: ")
    assert says in str(exited.value) and repr(value) in str(exited.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:4222", "http:// is not a NATS scheme"),
        ("nats://127.0.0.1:notaport", "Port could not be cast"),
        ("nats://127.0.0.1:99999", "Port out of range"),
        ("nats://127.0.0.1:0", "expected [scheme://]host[:port]"),
        ("nats://", "expected [scheme://]host[:port]"),
        ("nats://a:4222,nats:/b", "expected [scheme://]host[:port]"),
        ("nats://127.0.0.1:4222/studio", "expected [scheme://]host[:port]"),
    ],
)
def test_a_nats_url_that_is_no_nats_address_stops_the_process_naming_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    # given STUDIO_NATS_URL that no connect could use, when the settings are read, then the
    # process stops there naming the variable, instead of timing out as "cannot reach NATS"
    monkeypatch.setenv("STUDIO_NATS_URL", url)
    with pytest.raises(SystemExit) as exited:
        Settings.from_env()
    assert str(exited.value).startswith("STUDIO_NATS_URL: ")
    assert says in str(exited.value)


def test_a_password_in_a_bad_nats_url_is_not_repeated(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_NATS_URL", "nats://studio:s3cret-pass@127.0.0.1:99999")
    with pytest.raises(SystemExit) as exited:
        Settings.from_env()
    assert "s3cret-pass" not in str(exited.value) and "127.0.0.1:99999" in str(exited.value)


@pytest.mark.parametrize(
    "url",
    ["nats://127.0.0.1:4222", "tls://nats.example:4443", "nats://u:p@a:4222,nats://b:4222",
     "127.0.0.1:4222", "nats-host", "wss://nats.example", "nats://[::1]:4222"],
)  # fmt: skip
def test_every_address_nats_py_reads_is_still_accepted(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("STUDIO_NATS_URL", url)
    assert Settings.from_env().nats_url == url

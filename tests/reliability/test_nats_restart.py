"""The embedded nats-server is killed under a running studio: the studio restarts it on the same
port and store, the services reconnect, the training goes on, and no request answers 500."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from contracts import projects as p
from services import supervisor
from services.kernel import nats_server
from services.kernel.eventstore import EventStore
from services.kernel.lease import Leases
from services.kernel.nats_server import EmbeddedNats, free_port
from services.kernel.streams import StreamSpec, ensure_stream
from tests import imagesets
from tests.stack import ADMIN_PASSWORD, TEST_LIMITS, admin_headers
from tests.training_helpers import FAST, curves, wait

pytestmark = pytest.mark.e2e

API = "/api/v1"
STUDIO = [sys.executable, "-m", "services.cli"]
#: About a second an epoch here: the kills land past the first epoch (stored before them, to
#: compare after), with epochs left to store once NATS is back.
HYPER = FAST | {"epochs": 6, "image_size": 48, "seed": 3}
#: Longer than a JetStream call waits for its answer (5 s), so that calls time out meanwhile.
DOWN_S = 6.0


class Studio:
    """``studio up`` as a person starts it, with the services a training needs."""

    def __init__(
        self, root: Path, services: str = "identity,projects,datasets,trainer", **extra: str
    ) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workspace, self.imports = root / "ws", root / "imports"
        self.imports.mkdir(parents=True)
        self.log = root / "studio.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        # The tests' rate limits: a slow machine's run outlasts a minute of the test's traffic.
        env |= TEST_LIMITS | {
            "STUDIO_SERVICES": services,
            "STUDIO_LOG_LEVEL": "INFO",
            "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **extra,
        }
        argv = ["up", "--port", str(self.port), "--workspace", str(self.workspace)]
        self.proc = subprocess.Popen(
            [*STUDIO, *argv, "--import-root", str(self.imports)],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait(lambda: self.proc.poll() is None and "AI Studio is running" in self.text(), 90)

    def nats_pid(self) -> int | None:
        """The nats-server child of the studio, if one runs."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if ppid == self.proc.pid and b"nats-server" in cmdline and state != "Z":
                return int(entry.name)
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


@pytest.fixture
def studio(tmp_path: Path) -> Any:
    s = Studio(tmp_path)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


class Traffic(threading.Thread):
    """Reads and writes against the API until stopped, counting answers by status."""

    def __init__(self, url: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.run_id = url, run_id
        self.headers = admin_headers(url)
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.created: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as api:
            while not self.halt.is_set():
                for resp in (
                    api.post(f"{API}/projects", json={"name": f"p-{uuid.uuid4().hex[:6]}"}),
                    api.get(f"{API}/projects"),
                    api.get(f"{API}/training/runs/{self.run_id}"),
                ):
                    self.statuses[resp.status_code] += 1
                    unavailable = resp.status_code == 503 and is_unavailable(resp)
                    if resp.status_code >= 500 and not unavailable:
                        self.failures.append(f"{resp.request.url} {resp.status_code} {resp.text}")
                    if resp.status_code == 201:
                        self.created.append(resp.json()["data"]["id"])
                time.sleep(0.05)


class Watcher(threading.Thread):
    """Follows a run's SSE stream, as a browser would, until the stream ends or ``complete``."""

    def __init__(self, url: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.run_id = url, run_id
        self.headers = admin_headers(url)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()

    def run(self) -> None:
        path = f"{self.url}{API}/training/runs/{self.run_id}/stream"
        timeout = httpx.Timeout(30, read=120)
        with httpx.stream("GET", path, headers=self.headers, timeout=timeout) as sse:
            self.connected.set()
            name = ""
            for line in sse.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: ") and name not in ("progress", "keepalive"):
                    self.events.append((name, json.loads(line.removeprefix("data: "))))
                    if name == "complete":
                        return

    def epochs(self) -> list[int]:
        return [int(data["epoch"]) for name, data in self.events if name == "epoch_end"]


def is_unavailable(resp: httpx.Response) -> bool:
    """The error envelope with code UNAVAILABLE."""
    try:
        body = resp.json()
    except ValueError:
        return False
    return bool(body.get("status") == "error" and body["error"]["code"] == "UNAVAILABLE")


def prepare_run(studio: Studio, api: httpx.Client) -> tuple[str, list[str]]:
    """A project with a split of a learnable set, and ten more projects: what exists before."""
    project_id = api.post(f"{API}/projects", json={"name": "birds"}).json()["data"]["id"]
    root = imagesets.squares(studio.imports / "squares", per_class=60)
    body = {"project_id": project_id, "path": str(root)}
    job = api.post(f"{API}/datasets/import/local", json=body).json()["data"]
    wait(
        lambda: api.get(f"{API}/datasets/import/{job['id']}").json()["data"]["state"] == "completed"
    )
    ratios = {"train": 0.7, "val": 0.3, "test": 0.0}
    split = api.post(
        f"{API}/splits", json={"project_id": project_id, "name": "s", "ratios": ratios}
    )
    assert split.status_code == 201, split.text
    before = [project_id]
    for i in range(10):
        before.append(api.post(f"{API}/projects", json={"name": f"b{i}"}).json()["data"]["id"])
    return split.json()["data"]["id"], before


def kill_nats(studio: Studio, times: int) -> None:
    """SIGKILL the studio's nats-server ``times`` times, each time as soon as it is back."""
    for n in range(times):
        back = lambda n=n: studio.text().count("nats-server is running again") >= n  # noqa: E731
        wait(back, 60, every=0.01)
        pid = wait(studio.nats_pid, 30, every=0.01)
        os.kill(pid, signal.SIGKILL)


def test_nats_killed_mid_training_is_restarted_and_the_run_completes(studio: Studio):
    api = httpx.Client(base_url=studio.url, headers=admin_headers(studio.url), timeout=30)
    split_id, before = prepare_run(studio, api)
    port = nats_port(studio)
    body = {"project_id": before[0], "split_id": split_id, "hyperparameters": HYPER}
    started = api.post(f"{API}/training/run", json=body)
    assert started.status_code == 202, started.text
    run_id = started.json()["data"]["id"]
    wait(lambda: len(get_run(api, run_id)["history"]) >= 1, every=0.05)
    watcher = Watcher(studio.url, run_id)
    watcher.start()
    assert watcher.connected.wait(30)
    traffic = Traffic(studio.url, run_id)
    traffic.start()
    at_kill = get_run(api, run_id)
    assert at_kill["status"] == "running", at_kill
    assert len(at_kill["history"]) < HYPER["epochs"], at_kill  # epochs left to store after
    # when the nats-server dies without a word in the middle of the run, three times running
    kill_nats(studio, 3)
    # then the studio starts it again each time, on the same port, waiting longer each time
    wait(lambda: studio.text().count("nats-server is running again") >= 3, 60)
    for crash in (1, 2, 3):
        assert f"crash {crash} of {supervisor.NATS_MAX_CRASHES} allowed" in studio.text()
    assert f"restarting it on port {port} with the same store" in studio.text()
    assert nats_port(studio) == port and studio.proc.poll() is None
    # and the run goes on to complete every epoch
    done = wait(lambda: (r := get_run(api, run_id))["status"] not in ("queued", "running") and r)
    traffic.halt.set()
    traffic.join(60)
    assert done["status"] == "completed", done
    assert [e["epoch"] for e in done["history"]] == list(range(1, HYPER["epochs"] + 1))
    assert curves(done)[: len(at_kill["history"])] == curves(at_kill)  # stored before: kept
    # and a client following the run live saw every epoch and its end, across the restarts
    watcher.join(60)
    assert watcher.epochs() == list(range(1, HYPER["epochs"] + 1)), watcher.events
    assert watcher.events[-1][0] == "complete"
    # and every request meanwhile was answered, or refused with 503, never a 500
    assert not traffic.failures, traffic.failures[:5]
    assert traffic.statuses.total() > 0
    # and nothing written before the kills, or accepted during them, is missing
    ids = all_project_ids(api)
    assert set(before) <= ids
    assert set(traffic.created) <= ids
    # and while NATS hangs for longer than a call waits, a request answers 503, not 500
    pid = studio.nats_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        keyed = {"Idempotency-Key": uuid.uuid4().hex}
        hung = api.post(f"{API}/projects", json={"name": "while hung"}, headers=keyed)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert hung.status_code == 503, hung.text
    assert hung.json()["error"]["code"] == "UNAVAILABLE" and hung.headers["Retry-After"] == "1"
    assert studio.proc.poll() is None
    assert studio.stop() == 0


def test_a_nats_server_that_keeps_crashing_stops_the_studio_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # given a running nats-server whose binary can no longer start
    server = nats_server.start(tmp_path / "nats")
    broken = tmp_path / "nats-server"
    broken.write_text("#!/bin/sh\necho 'cannot open the store' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("STUDIO_NATS_SERVER_BIN", str(broken))
    keeper = supervisor.NatsKeeper(server, max_crashes=3, backoff_s=(0.01, 0.02))
    # when it dies
    server.kill()
    # then the supervisor tries again with backoff, gives up at the third crash, and says where
    # to look
    assert supervisor.supervise([], keeper, []) == 1
    said = capsys.readouterr().err
    assert said.count(f"restarting it on port {server.port}") == 2
    assert "could not be restarted (nats-server exited with code 1)" in said
    assert "3 crashes within 60s, giving up" in said
    assert f"See the nats-server log: {server.log_path}" in said
    assert "cannot open the store" in server.log_path.read_text()


def test_studio_up_gives_up_on_a_nats_server_that_cannot_restart_and_stops_everything(
    tmp_path: Path,
):
    # given a studio whose nats-server binary starts once and then fails every time
    marker, wrapper = tmp_path / "started-once", tmp_path / "nats-server"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{marker}" ]; then echo "store is unreadable" >&2; exit 1; fi\n'
        f'touch "{marker}"\n'
        f'exec "{nats_server.binary()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    studio = Studio(tmp_path, "projects", STUDIO_NATS_SERVER_BIN=str(wrapper))
    try:
        studio.wait_ready()
        # when its nats-server dies
        os.kill(wait(studio.nats_pid, 30), signal.SIGKILL)
        # then the studio retries, gives up, stops every service and exits non-zero
        assert studio.proc.wait(120) == 1
    finally:
        studio.stop()
    said = studio.text()
    log_path = studio.workspace / "nats" / "nats-server.log"
    assert f"{supervisor.NATS_MAX_CRASHES} crashes within" in said
    assert f"giving up and stopping the studio. See the nats-server log: {log_path}" in said
    assert "projects is stopping" in said
    assert "store is unreadable" in log_path.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{studio.url}/health", timeout=2)


def test_nats_is_restarted_while_a_service_waits_out_a_long_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # given a service that keeps exiting, and so waits 30 s before its next start
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", (30,))
    server = nats_server.start(tmp_path / "nats")
    flaky = supervisor.Child("flaky", [sys.executable, "-c", "raise SystemExit(3)"], {})
    flaky.start()
    stopping: list[int] = []
    codes: list[int] = []
    keeper = supervisor.NatsKeeper(server)
    watch = threading.Thread(
        target=lambda: codes.append(supervisor.supervise([flaky], keeper, stopping))
    )
    watch.start()
    try:
        wait(lambda: flaky.restart_at is not None, 30)
        # when the nats-server dies meanwhile
        server.kill()
        # then it is back long before the service's next start
        said: list[str] = []

        def back() -> bool:
            said.append(capsys.readouterr().err)
            return "nats-server is running again" in "".join(said)

        wait(back, 20)
        assert flaky.restart_at is not None and flaky.process is None
        assert "flaky exited with code 3; restarting in 30s" in "".join(said)
    finally:
        stopping.append(signal.SIGINT)
        watch.join(30)
        server.stop()
    assert codes == [0]


def test_a_nats_server_that_dies_during_startup_is_named_with_its_log(tmp_path: Path):
    server = nats_server.start(tmp_path / "nats")
    server.kill()
    dead_gateway = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(supervisor.StartupError, match="nats-server exited during startup") as err:
        supervisor.wait_healthy(dead_gateway, [], [], timeout=30, embedded=server)
    assert str(server.log_path) in str(err.value)


async def test_event_store_and_leases_wait_for_a_nats_server_down_longer_than_a_call_waits(
    nats_srv: EmbeddedNats, nc: NATS
):
    # given an aggregate with an event, and a held lease
    js = nc.jetstream()
    await ensure_stream(js, StreamSpec(p.STREAM, (p.EVENTS,)))
    store: EventStore[p.Event] = EventStore(
        nc, stream=p.STREAM, subject=p.event_subject, event_type=p.Event
    )
    event = p.ProjectCreated(project_id="p1", name="Cats", message_id="m1")
    position = await store.append("p1", [event], 0)
    leases = Leases(js, ttl=60)
    await leases.open()
    held = await leases.acquire("gpu-0", "t1")
    assert held is not None
    # when the server dies and comes back only after a JetStream call has timed out (5 s)
    nats_srv.kill()

    async def back_later() -> None:
        await asyncio.sleep(DOWN_S)  # the outage itself: nothing to wait for
        await asyncio.to_thread(nats_srv.restart)

    restart = asyncio.create_task(back_later())
    loaded, version, holder, renewed, other = await asyncio.gather(
        store.load("p1"),
        store.version("p1"),
        leases.holder("gpu-0"),
        held.renew(),
        leases.acquire("gpu-1", "t1"),
    )
    await restart
    # then every call waited for it and answered as if nothing happened
    assert [(e.sequence, e.event) for e in loaded] == [(position, event)]
    assert version == position
    assert holder is not None and holder.holder == "t1"
    assert renewed and not held.lost.is_set()
    assert other is not None and (await leases.holder("gpu-1")) == other.info


def get_run(api: httpx.Client, run_id: str) -> dict[str, Any]:
    return api.get(f"{API}/training/runs/{run_id}").json()["data"]  # type: ignore[no-any-return]


def nats_port(studio: Studio) -> int:
    state = json.loads((studio.workspace / "run" / "studio.json").read_text())
    return int(state["nats_url"].rsplit(":", 1)[1])


def all_project_ids(api: httpx.Client) -> set[str]:
    ids: set[str] = set()
    while True:
        page = api.get(
            f"{API}/projects", params={"status": "all", "limit": 500, "offset": len(ids)}
        )
        items = page.json()["data"]["items"]
        ids |= {p["id"] for p in items}
        if len(items) < 500:
            return ids

"""Service crashes at random moments: a scripted workload runs under ``studio up`` while a
chaos loop SIGKILLs a random service every few seconds (the supervisor restarts it); what the
workload leaves behind, read through every read model the API serves, equals what the same
workload leaves on a studio where nothing dies (``tests/reliability/workload.py``'s hash).

``make test`` runs one project's journey under a few kills; ``make soak`` runs several
projects under kills for as long as they take.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import threading
from pathlib import Path

import httpx
import nats
import pytest

from services import supervisor
from services.kernel import natsauth
from tests.reliability import figures
from tests.reliability.test_nats_restart import Studio
from tests.reliability.workload import Workload, differences, digest
from tests.stack import API, admin_headers
from tests.training_helpers import wait

pytestmark = pytest.mark.e2e

SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
SOAK = bool(os.environ.get("STUDIO_SOAK"))


class Chaos(threading.Thread):
    """SIGKILLs a live service of ``studio`` every ``every`` seconds (a seeded random order,
    every service once a round), at most ``limit`` times, until halted."""

    def __init__(
        self,
        studio: Studio,
        seed: int,
        every: tuple[float, float],
        limit: int | None,
        victims: tuple[str, ...],
    ) -> None:
        super().__init__(daemon=True)
        self.studio, self.rng, self.every, self.limit = studio, random.Random(seed), every, limit
        self.victims = victims
        self.halt = threading.Event()
        self.kills: list[str] = []

    def run(self) -> None:
        # Rounds in a shuffled order: each service dies once a round, at a random moment.
        order: list[str] = []
        while not self.halt.wait(self.rng.uniform(*self.every)):
            if self.limit is not None and len(self.kills) >= self.limit:
                return
            order = order or self.rng.sample(self.victims, len(self.victims))
            pid = service_pid(self.studio, order[0])
            if pid is None:
                continue  # still being restarted after an earlier kill: its turn waits
            os.kill(pid, signal.SIGKILL)
            self.kills.append(order.pop(0))


def service_pid(studio: Studio, name: str) -> int | None:
    """The live process of ``services.<name>`` that the studio started."""
    wanted = f"services.{name}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == studio.proc.pid and stat[0] != "Z" and wanted in argv:
            return int(entry.name)
    return None


def stored_events(studio: Studio) -> int:
    """Events in every event stream of the studio (its KV and Object Store streams left out)."""

    async def count() -> int:
        url = json.loads((studio.workspace / "run" / "studio.json").read_text())["nats_url"]
        nc = await nats.connect(natsauth.tooling_url(url, studio.workspace))
        try:
            infos = await nc.jetstream().streams_info()
        finally:
            await nc.close()
        names = [i for i in infos if not i.config.name.startswith(("KV_", "OBJ_"))]
        return sum(i.state.messages for i in names)

    return asyncio.run(count())


def healthy(studio: Studio) -> bool:
    try:
        return httpx.get(f"{studio.url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    "size",
    [
        # The gateway is killed in the soak run: a keyed POST in flight when it dies leaves its
        # Idempotency-Key claimed; the retry takes the claim over once its heartbeat stops
        # (services/gateway/idempotency.py) and gets the job's 202 (test_gateway_death.py).
        pytest.param(
            {"projects": 1, "every": (1.5, 3.0), "kills": 5, "victims": SERVICES}, id="bounded"
        ),
        pytest.param(
            {"projects": 3, "every": (2.0, 5.0), "kills": None, "victims": (*SERVICES, "gateway")},
            id="soak",
            marks=pytest.mark.soak,
        ),
    ],
)
def test_random_service_kills_leave_the_state_of_a_run_without_faults(tmp_path, size):
    studio = Studio(tmp_path, ",".join(SERVICES))
    try:
        # Five services, torch among them, on a loaded two-core machine: be patient.
        wait(lambda: studio.proc.poll() is None and "AI Studio is running" in studio.text(), 240)
        # given the state one workload leaves on a studio where nothing dies
        calm = Workload(studio.url, studio.imports, "calm", projects=size["projects"])
        calm.run()
        expected = calm.state()
        # when the same workload runs again while services are killed at random
        chaos = Chaos(studio, 13, size["every"], size["kills"], size["victims"])
        stormy = Workload(studio.url, studio.imports, "storm", projects=size["projects"])
        before = stored_events(studio)
        chaos.start()
        try:
            stormy.run()
        finally:
            chaos.halt.set()
            chaos.join(30)
        wait(lambda: healthy(studio), 120, every=0.5)
        appended = stored_events(studio) - before
        # then every read model shows what it showed after the calm run: nothing lost, nothing
        # applied twice, every run completed (none left running, interrupted ones resumed)
        found = stormy.state()
        diff = differences(found, expected)
        print("\n".join(diff))
        assert not diff, diff
        assert digest(found) == digest(expected)
        with httpx.Client(base_url=studio.url, headers=admin_headers(studio.url)) as api:
            queue = api.get(f"{API}/training/queue").json()["data"]
        assert [r for r in queue["running"] + queue["queued"] if r.get("id")] == []
        assert studio.proc.poll() is None  # the supervisor never gave up
        assert chaos.kills, "no service was killed: the workload ended before the first kill"
    finally:
        studio.stop()
    figures.record(
        f"chaos: {len(chaos.kills)} random service kills ({size['projects']} projects)",
        events_appended=appended,
        events_lost=0,
        duplicates_applied=0,
        longest_outage_s=round(stormy.longest_outage_s, 2),
    )
    print(f"kills: {chaos.kills}; resumes: {stormy.resumes}; retries: {stormy.retries}")


def test_a_service_that_ran_well_is_restarted_at_once_however_often_it_died_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # given a service that runs for a while, then dies, again and again
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", (0.1, 60))
    monkeypatch.setattr(supervisor, "STABLE_AFTER_S", 0.5)
    starts = tmp_path / "starts"
    code = f"import time; open({str(starts)!r}, 'a').write('x'); time.sleep(1)"
    child = supervisor.Child("steady", [sys.executable, "-c", code], {})
    child.start()
    stopping: list[int] = []
    watch = threading.Thread(target=supervisor.supervise, args=([child], None, stopping))
    watch.start()
    try:
        # then each death is followed by a restart after the first step, not a growing wait
        wait(lambda: starts.exists() and len(starts.read_text()) >= 4, 60, every=0.1)
    finally:
        stopping.append(signal.SIGINT)
        watch.join(30)
        child.stop()

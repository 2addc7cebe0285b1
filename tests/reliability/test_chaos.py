"""Service crashes at random moments: a scripted workload runs under ``studio up`` while a
chaos loop SIGKILLs a random service every few seconds (the supervisor restarts it); what the
workload leaves behind, read through every read model the API serves, equals what the same
workload leaves on a studio where nothing dies (``tests/reliability/workload.py``'s hash).

``make test`` runs one project's journey under a few kills; ``make soak`` runs several
projects under kills for as long as they take.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

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
    """SIGKILLs services of ``studio``: those of ``milestones[m]`` when the workload reaches
    milestone ``m`` (``at``, called by the workload: a kill in each phase however fast the
    machine), and a service every ``every`` seconds (a seeded random order, every service once
    a round), at most ``limit`` times, until halted.

    The random loop kills only a process that has lived ``settle`` seconds: one killed again
    and again as soon as it is spawned never finishes starting (a trainer imports torch for
    seconds on a loaded machine), and the supervisor, seeing a crash loop, waits up to 30 s
    before each restart, so the workload waits for a service that is never up (the soak's
    "the studio did not answer in time"). A service not yet settled keeps its turn for the
    next round; the next settled one dies instead."""

    def __init__(
        self,
        studio: Studio,
        seed: int,
        every: tuple[float, float],
        limit: int | None,
        victims: tuple[str, ...],
        milestones: dict[str, tuple[str, ...]],
        settle: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self.studio, self.rng, self.every, self.limit = studio, random.Random(seed), every, limit
        self.victims, self.milestones, self.settle = victims, milestones, settle
        self.halt = threading.Event()
        self.lock = threading.Lock()
        #: (service, when) of every kill: ``when`` is a milestone's name or "random".
        self.kills: list[tuple[str, str]] = []

    def run(self) -> None:
        # Rounds in a shuffled order: each service dies once a round, at a random moment.
        order: list[str] = []
        while not self.halt.wait(self.rng.uniform(*self.every)):
            if self.limit is not None and self.random_kills() >= self.limit:
                return
            order = order or self.rng.sample(self.victims, len(self.victims))
            for name in order:
                if self.kill(name, "random", patience=0, settle=self.settle):
                    order.remove(name)
                    break

    def at(self, milestone: str) -> None:
        """The workload reached ``milestone``: its victims die now (each once it runs again,
        if a random kill got it first), before the workload goes on."""
        for victim in self.milestones.get(milestone, ()):
            assert self.kill(victim, milestone, patience=120), f"{victim} never ran again"

    def kill(self, name: str, when: str, patience: float, settle: float = 0.0) -> bool:
        """Kills ``name``'s process once one has lived ``settle`` seconds, waiting for one at
        most ``patience`` seconds; whether it did."""
        deadline = time.monotonic() + patience
        with self.lock:
            while (pid := service_pid(self.studio, name, settle)) is None:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
            self.kills.append((name, when))
            return True

    def random_kills(self) -> int:
        return sum(when == "random" for _, when in self.kills)


def service_pid(studio: Studio, name: str, settle: float = 0.0) -> int | None:
    """The live process of ``services.<name>`` that the studio started, if it has lived
    ``settle`` seconds."""
    wanted = f"services.{name}".encode()
    now = float(Path("/proc/uptime").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == studio.proc.pid and stat[0] != "Z" and wanted in argv:
            # Field 22 of stat (19 after the name): its start, in clock ticks since boot.
            lived = now - int(stat[19]) / os.sysconf("SC_CLK_TCK")
            return int(entry.name) if lived >= settle else None
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
        names = [i for i in infos if not (i.config.name or "").startswith(("KV_", "OBJ_"))]
        return sum(i.state.messages for i in names)

    return asyncio.run(count())


def healthy(studio: Studio) -> bool:
    try:
        return httpx.get(f"{studio.url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def code_fingerprint() -> str:
    """A sha256 of the code a service runs: a service restarted after a kill imports it anew."""
    root = Path(__file__).resolve().parents[2]
    files = sorted(f for d in ("services", "contracts") for f in (root / d).rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


#: A kill in every phase of a journey, each of another service: the project's service as the
#: project is created, datasets while the import runs, the identity service once the split is
#: made, the trainer past the run's first epoch (the run resumes from its checkpoint), the
#: gateway as the evaluation starts, the exporter while the export runs.
AT_MILESTONES: dict[str, tuple[str, ...]] = {
    "project": ("projects",),
    "import": ("datasets",),
    "split": ("identity",),
    "epoch": ("trainer",),
    "evaluation": ("gateway",),
    "export": ("exporter",),
}
#: ``make test``'s share of them, four services in three phases, for about 10 s more than the
#: journey takes without faults on a quiet machine: what a kill costs is the restart of a
#: service the next step needs (1 s of supervisor back-off, then its start: ~4 s for the
#: trainer and the exporter, which import torch). The trainer's is paid (the interrupted run
#: resumes), the datasets service's too (the split waits for it); the exporter dies beside
#: datasets, idle, and is back long before the export.
BOUNDED_MILESTONES: dict[str, tuple[str, ...]] = {
    "project": ("projects",),
    "import": ("datasets", "exporter"),
    "epoch": ("trainer",),
}


@pytest.mark.parametrize(
    "size",
    [
        # The gateway is killed in the soak run: a keyed POST in flight when it dies leaves its
        # Idempotency-Key claimed; the retry takes the claim over once its heartbeat stops
        # (services/gateway/idempotency.py) and gets the job's 202 (test_gateway_death.py).
        pytest.param(
            {
                "projects": 1,
                "every": (1.5, 3.0),
                "kills": 1,
                "victims": SERVICES,
                "milestones": BOUNDED_MILESTONES,
            },
            id="bounded",
        ),
        pytest.param(
            {
                "projects": 3,
                "every": (2.0, 5.0),
                # A budget, not a rate: on a loaded machine an export outlasts a service's life
                # between kills, and killed every time it would never end; once the budget is
                # spent the workload finishes, and its state is compared.
                "kills": 48,
                "victims": (*SERVICES, "gateway"),
                "milestones": AT_MILESTONES,
                # Random kills only of a service up long enough for the supervisor to call it
                # well: every service can die every ~30 s, none is held in a crash loop.
                "settle": supervisor.STABLE_AFTER_S,
            },
            id="soak",
            marks=pytest.mark.soak,
        ),
    ],
)
def test_random_service_kills_leave_the_state_of_a_run_without_faults(tmp_path, size):
    studio = Studio(tmp_path, ",".join(SERVICES))
    code = code_fingerprint()
    try:
        # Five services, torch among them, on a loaded two-core machine: be patient.
        wait(lambda: studio.proc.poll() is None and "AI Studio is running" in studio.text(), 240)
        # given the state one workload leaves on a studio where nothing dies
        calm = Workload(studio.url, studio.imports, "calm", projects=size["projects"])
        began = time.monotonic()
        calm.run()
        calm_s = time.monotonic() - began
        expected = calm.state()
        # when the same workload runs again while services are killed at its milestones and at
        # random moments
        chaos, stormy, appended, stormy_s = storm(studio, size)
        # then every read model shows what it showed after the calm run: nothing lost, nothing
        # applied twice, every run completed (none left running, interrupted ones resumed)
        assert_same_state(stormy.state(), expected, code)
        with httpx.Client(base_url=studio.url, headers=admin_headers(studio.url)) as api:
            queue = api.get(f"{API}/training/queue").json()["data"]
        assert [r for r in queue["running"] + queue["queued"] if r.get("id")] == []
        assert studio.proc.poll() is None  # the supervisor never gave up
        # and every milestone of every journey cost its services a life
        at = Counter(when for _, when in chaos.kills if when != "random")
        wanted = {m: size["projects"] * len(v) for m, v in size["milestones"].items()}
        assert at == wanted, chaos.kills
    finally:
        studio.stop()
    figures.record(
        f"chaos: services killed at milestones and at random ({size['projects']} projects)",
        events_appended=appended,
        events_lost=0,
        duplicates_applied=0,
        kills=len(chaos.kills),
        longest_outage_s=round(stormy.longest_outage_s, 2),
    )
    print(f"kills: {chaos.kills}; resumes: {stormy.resumes}; retries: {stormy.retries}")
    print(f"workload: {calm_s:.1f} s without faults, {stormy_s:.1f} s under them")


def storm(studio: Studio, size: dict[str, Any]) -> tuple[Chaos, Workload, int, float]:
    """The workload again, under kills at its milestones and at random, then a healthy studio:
    the chaos, the workload, the events it appended and how long it took."""
    every, limit, victims = size["every"], size["kills"], size["victims"]
    chaos = Chaos(
        studio, 13, every, limit, victims, size["milestones"], settle=size.get("settle", 0.0)
    )
    stormy = Workload(
        studio.url, studio.imports, "storm", projects=size["projects"], milestone=chaos.at
    )
    before = stored_events(studio)
    chaos.start()
    began = time.monotonic()
    try:
        stormy.run()
    finally:
        chaos.halt.set()
        chaos.join(30)
    seconds = time.monotonic() - began
    wait(lambda: healthy(studio), 120, every=0.1)
    return chaos, stormy, stored_events(studio) - before, seconds


def assert_same_state(found: Any, expected: Any, code: str) -> None:
    """``found`` equals ``expected``, difference by difference and by digest."""
    diff = differences(found, expected)
    print("\n".join(diff))
    # A service restarted after a kill runs the code of the tree as it is then: a change made
    # to it during the run (a shared working tree) makes the two states incomparable.
    assert not diff or code_fingerprint() == code, ("the code changed during the run", diff)
    assert not diff, diff
    assert digest(found) == digest(expected)


def test_differences_name_every_difference_the_digest_sees():
    # given states that differ only where a loose comparison sees none
    twins = [
        ({"parity": {"passed": True}}, {"parity": {"passed": True, "min_iou": None}}),
        ({"size": 1}, {"size": 1.0}),
        ({"loss": 0.0}, {"loss": -0.0}),
        ({"passed": True}, {"passed": 1}),
    ]
    for found, expected in twins:
        # then their digests differ and so do their differences, which name the place
        assert digest(found) != digest(expected)
        assert differences(found, expected), (found, expected)
    assert differences(*twins[0]) == [".parity.min_iou: <missing> != None"]
    assert differences({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}) == []


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

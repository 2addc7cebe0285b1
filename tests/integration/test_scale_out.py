"""Two trainers that share nothing but NATS train two runs at once.

Beside the studio's trainer (on the studio's workspace) a second one runs as on another
machine: its own ``STUDIO_WORKSPACE`` (no datasets folder, no checkpoints of the other), its own
``STUDIO_TRAINER_SLOT`` (device lease) and ``STUDIO_INSTANCE``, only the NATS URL and its NATS
credentials in common. Two runs are trained at once, one by each trainer under its own lease,
both to the end, their images fetched over NATS into each trainer's own cache (checked from the
stream's ``RunStarted``/``RunCompleted``, the cache folder and ``studio_blob_cache_total``); a
further run on the same split fetches no image again. A run the other machine trained is then
exported by the studio's exporter, which finds its checkpoint in the Object Store only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import nats
import pytest

from contracts import datasets as d
from contracts import training as c
from services.kernel import natsauth
from services.kernel.eventstore import EventStore
from services.kernel.nats_server import free_port
from services.kernel.queries import collect
from tests.integration.test_domain_metrics import Scrape
from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer", "exporter")
REMOTE, REMOTE_SLOT = "machine-b", "machine-b-cpu0"
#: Epochs of the run queued first (its trainer is busy for seconds) and of the others.
LONG, SHORT = 8, 2


class Remote:
    """The trainer of "another machine": its workspace and its ``/metrics``."""

    def __init__(self, workspace: Path, metrics_port: int) -> None:
        self.workspace, self.metrics = workspace, f"http://127.0.0.1:{metrics_port}/metrics"

    def scrape(self) -> Scrape:
        return Scrape(httpx.get(self.metrics, timeout=10).text)

    def lookups(self) -> tuple[float, float]:
        """The cache's (misses, hits) so far."""
        s = self.scrape()
        values = (s.value("studio_blob_cache_total", outcome=o) for o in ("miss", "hit"))
        return tuple(v or 0.0 for v in values)  # type: ignore[return-value]

    def cached(self) -> set[str]:
        return {p.name for p in (self.workspace / "trainer" / "images").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def remote(stack: Stack) -> Iterator[Remote]:
    """A second trainer on a workspace of its own, sharing only NATS with the studio."""
    workspace, port = stack.root / "machine-b", free_port()
    env = {
        "STUDIO_WORKSPACE": str(workspace),
        "STUDIO_TRAINER_SLOT": REMOTE_SLOT,
        "STUDIO_INSTANCE": REMOTE,
        "STUDIO_METRICS_PORT": str(port),
    }
    seeds = natsauth.secrets_dir(stack.workspace)
    if natsauth.seed_path(seeds, "trainer").exists():  # where the embedded server wrote it
        env["STUDIO_NATS_CREDS"] = str(seeds)
    stack.start(REMOTE, module="trainer", **env)
    try:
        found = Remote(workspace, port)
        wait(lambda: _answers(found), timeout=60)
        yield found
    finally:
        stack.stop(REMOTE)


def _answers(remote: Remote) -> bool:
    try:
        return remote.scrape().value("studio_blob_cache_total", outcome="miss") is not None
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def split(stack: Stack) -> tuple[str, str]:
    return learnable_split(stack, per_class=12, test=0.25)


def submit_runs(
    stack: Stack, split: tuple[str, str], seeds: tuple[int, ...], epochs: int
) -> list[str]:
    """A run on the split for each seed, queued one after the other; their ids."""
    hyper = {"epochs": epochs}
    return [
        submit(stack, *split, hyperparameters=hyper | {"seed": seed}).json()["data"]["id"]
        for seed in seeds
    ]


@pytest.fixture(scope="module")
def first_round(stack: Stack, remote: Remote, split: tuple[str, str]) -> Round:
    """Two runs trained at once, one on each trainer, while the other machine's cache was empty.

    Not left to a race of two idle trainers: a long run is queued first and, once a trainer
    is on it (its device busy for seconds to come), a short one, which only the other trainer
    is free to take. (Holding a trainer with SIGSTOP would not do: either trainer may be the
    one that receives a command, and a held one answers none.)"""
    misses = remote.lookups()[0]
    [first] = submit_runs(stack, split, seeds=(1,), epochs=LONG)
    wait_status(stack, first, "running", timeout=120)
    [second] = submit_runs(stack, split, seeds=(2,), epochs=SHORT)
    for run_id in (first, second):
        assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    spans = asyncio.run(started_and_ended(stack, [first, second]))
    return Round(spans, remote.lookups()[0] - misses)


def test_two_trainers_on_two_machines_train_two_runs_at_once(
    stack: Stack, remote: Remote, split: tuple[str, str], first_round: Round
) -> None:
    # Given a second trainer that shares nothing but NATS with the studio
    # When two runs are queued together (first_round)
    spans = first_round.spans
    # Then each ran on its own trainer, under its own lease, at the same time
    assert {s.instance for s, _ in spans} == {"test", REMOTE}
    assert len({s.lease for s, _ in spans}) == 2 and REMOTE_SLOT in {s.lease for s, _ in spans}
    (start_a, end_a), (start_b, end_b) = [(s.occurred_at, e) for s, e in spans]
    assert start_a < end_b and start_b < end_a, spans  # the two intervals overlap
    # and the other machine fetched each image of the split's train and val subsets once, by
    # NATS, into its own cache, and has no datasets folder
    trained_on = asyncio.run(subset_blobs(stack, split, ("train", "val")))
    assert first_round.remote_misses == len(trained_on)
    assert remote.cached() == trained_on
    assert not (remote.workspace / "blobs").exists()


def test_a_second_run_on_the_same_split_fetches_no_image(
    stack: Stack, remote: Remote, split: tuple[str, str], first_round: Round
) -> None:
    # Given both trainers have trained on the split (first_round)
    misses, hits = remote.lookups()
    shared_cache = stack.workspace / "trainer" / "images"
    shared = {p: p.stat().st_mtime_ns for p in shared_cache.rglob("*") if p.is_file()}
    assert shared, "the studio's trainer fetched its run's images into its own cache"
    # When another run on the same split is trained, by either trainer
    [run_id] = submit_runs(stack, split, seeds=(3,), epochs=SHORT)
    assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    # Then neither fetched an image again: the other machine counted no miss (and hits when
    # the run was its), and the studio's trainer's cache is the same files, none rewritten
    now_misses, now_hits = remote.lookups()
    [(started, _)] = asyncio.run(started_and_ended(stack, [run_id]))
    trained_on = asyncio.run(subset_blobs(stack, split, ("train", "val")))
    assert now_misses == misses
    assert now_hits == hits + (len(trained_on) if started.instance == REMOTE else 0)
    assert {p: p.stat().st_mtime_ns for p in shared_cache.rglob("*") if p.is_file()} == shared


def test_a_run_trained_on_the_other_machine_is_exported_here(
    stack: Stack, split: tuple[str, str], first_round: Round
) -> None:
    # Given a run the other machine trained (its checkpoints in its own workspace only)
    [run_id] = [s.run_id for s, _ in first_round.spans if s.instance == REMOTE]
    # When the studio's exporter exports it
    with client(stack) as api:
        resp = api.post(f"{API}/export/run", json={"run_id": run_id, "format": "onnx"})
        assert resp.status_code == 202, resp.text
        path = f"{API}/export/{resp.json()['data']['id']}"
        export = wait(lambda: (e := api.get(path).json()["data"])["status"] != "running" and e)
    # Then it completed, its checkpoint from the Object Store (none is on this workspace) and
    # its parity images (the split's test subset) fetched into the exporter's own cache
    assert export["status"] == "completed", export
    assert not (stack.workspace / "artifacts" / run_id).exists()
    cached = {p.name for p in (stack.workspace / "exporter" / "images").rglob("*") if p.is_file()}
    assert asyncio.run(subset_blobs(stack, split, ("test",))) <= cached


# --- reading the stream and the subsets ---------------------------------------------------


@dataclass(frozen=True)
class Round:
    """Each run's ``RunStarted`` and the time it completed; what the other machine fetched."""

    spans: list[tuple[c.RunStarted, datetime]]
    remote_misses: float


async def started_and_ended(stack: Stack, runs: list[str]) -> list[tuple[c.RunStarted, datetime]]:
    """Each run's (last) ``RunStarted`` and when it completed, from the training stream."""
    nc = await nats.connect(stack.nats_url)
    try:
        store: EventStore[c.Event] = EventStore(
            nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )
        spans = []
        for run_id in runs:
            events = [s.event for s in await store.load(run_id)]
            started = [e for e in events if isinstance(e, c.RunStarted)][-1]
            ended = [e for e in events if isinstance(e, c.RunCompleted)][-1]
            spans.append((started, ended.occurred_at))
        return spans
    finally:
        await nc.close()


async def subset_blobs(stack: Stack, split: tuple[str, str], subsets: tuple[str, ...]) -> set[str]:
    """The blobs of the split's subsets, asked of the datasets service as a trainer asks."""
    nc = await nats.connect(stack.nats_url)
    try:
        broker: Any = SimpleNamespace(connection=nc)
        found: set[str] = set()
        for subset in subsets:
            first = d.GetSubset(dataset_id=split[0], split_id=split[1], subset=subset)  # type: ignore[arg-type]
            items = await collect(broker, d.Subjects.SUBSET, first, d.SubsetPage)
            found |= {item.blob for item in items}
        return found
    finally:
        await nc.close()

"""The studio on a three-node NATS cluster (every stream, bucket and consumer replicated on
each node) keeps its promises while nodes die: during an import a node is SIGKILLed (the leader
of the datasets stream) and restarted, then during a training run on what was imported another
(the leader of the training stream), and restarted.

The import commits whole, the run completes with every epoch stored once and shown once, no
SSE follower of the run misses an event, and a client that keeps writing and reading back sees
no error and no outage longer than a reconnect and an election (nats-server's Raft elects a new
leader 4 to 9 s after the old one stops answering: that is most of the figure). The figures go
to the fault suite's table. The soak variant (``make soak``) imports and trains more and kills
every node in turn in each phase.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import msgspec
import nats
import pytest

from contracts import datasets as d
from contracts import training as t
from services import bus_access
from services.gateway.idempotency import derived_id
from tests import imagesets
from tests.cluster import (
    Follower,
    OutageProbe,
    duplicates,
    post,
    replicas,
    stored_events,
    stream_leader,
)
from tests.reliability import figures
from tests.stack import ADMIN, API, Stack
from tests.training_helpers import FAST, curves, run, wait, wait_status

pytestmark = pytest.mark.integration

NODES = 3
#: The longest a client may wait for a write to be taken and read back: a client reconnect
#: (1 s), a Raft election (up to 9 s) and the calls' retries, with room for a loaded two-core
#: machine.
OUTAGE_BOUND_S = 25.0
ACCEPTED = "common.command_accepted.v1"
#: The longest an epoch may take (a deadline, not a wait): a busy machine, an election.
EPOCH_S = 300.0
#: The longest a killed node may take to come back and catch up (a deadline, not a wait).
RESTART_S = 180.0


@dataclass(frozen=True)
class Size:
    per_class: int  # images per class of the import (two classes)
    epochs: int
    kills: int  # nodes killed one after another in each phase (each restarted first)


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("cluster"),
        ("projects", "datasets", "trainer"),
        nats_nodes=NODES,
        STUDIO_TRAINER_SLOT="slot-a",
    )
    try:
        yield s.up(150)
    finally:
        s.down()


@pytest.mark.parametrize(
    "size",
    [
        # An epoch before the kill, one through the election, one after.
        pytest.param(Size(per_class=60, epochs=3, kills=1), id="one-node-each-phase"),
        pytest.param(
            Size(per_class=300, epochs=12, kills=NODES), id="soak", marks=pytest.mark.soak
        ),
    ],
)
def test_an_import_and_a_run_ride_out_nodes_killed_one_after_another(
    cluster_stack: Stack, size: Size
):
    stack = cluster_stack
    # given a studio whose every stream and bucket has a copy on each of three nodes
    wanted = {s.name for s in bus_access.STREAMS} | {f"OBJ_{b}" for b in bus_access.OBJECT_BUCKETS}
    assert {n: r for n, r in replicas(stack).items() if n in wanted} == dict.fromkeys(wanted, 3)
    probe = OutageProbe(stack)
    probe.start()
    try:
        project_id, killed = _import_while_nodes_die(stack, size)
        # and the node killed last comes back while the training starts
        _bring_back(stack, killed)
        _train_while_nodes_die(stack, size, project_id)
    finally:
        probe.stop()
    # then a client writing and reading back all along met no error, only a short wait
    assert not probe.failures, probe.failures[:5]
    assert probe.rounds > 0 and probe.longest_outage_s < OUTAGE_BOUND_S
    figures.record(
        f"cluster: nodes killed during an import and a run ({size.kills} per phase)",
        longest_outage_s=round(probe.longest_outage_s, 2),
    )


def _import_while_nodes_die(stack: Stack, size: Size) -> tuple[str, set[int]]:
    assert stack.cluster is not None
    source = imagesets.squares(stack.imports / uuid.uuid4().hex, size.per_class)
    with stack.sync_client(timeout=60) as api:
        project_id = post(api, "/projects", {"name": "c"}).json()["data"]["id"]
        body = {"project_id": project_id, "path": str(source)}
        job = post(api, "/datasets/import/local", body)
        assert job.status_code == 202, job.text
        import_id = job.json()["data"]["id"]
        killed: set[int] = set()
        for _ in range(size.kills):
            # when, the import caught unfinished (its service paused meanwhile), the leader of
            # the datasets stream dies (the node killed before having come back first)
            stack.pause("datasets")
            state = api.get(f"{API}/datasets/import/{import_id}").json()["data"]["state"]
            killed = _kill_next(stack, d.STREAM, killed)
            stack.resume("datasets")
            if state in ("completed", "failed", "cancelled"):
                break
        done = wait(lambda: _finished(api, import_id), timeout=240)
        # then the import committed whole, every image once, read model and stream alike
        assert done["state"] == "completed", done
        summary = api.get(f"{API}/datasets/{project_id}").json()["data"]
        assert summary["images"] == 2 * size.per_class, summary
    events = stored_events(stack, d.STREAM, d.event_subject(project_id))
    added = [json.loads(data) for _, kind, data in events if kind == "datasets.images_added.v1"]
    ids = [image["image_id"] for batch in added for image in batch["images"]]
    assert len(ids) == len(set(ids)) == 2 * size.per_class
    assert sum(kind == "datasets.import_completed.v1" for _, kind, _ in events) == 1
    assert duplicates(events) == 0
    figures.record(
        f"cluster: nodes killed during an import ({size.kills})",
        events_appended=len(events),
        events_lost=2 * size.per_class - len(set(ids)),
        duplicates_applied=duplicates(events),
    )
    return project_id, killed


def _train_while_nodes_die(stack: Stack, size: Size, project_id: str) -> None:
    assert stack.cluster is not None
    killed: set[int] = set()
    ratios = {"train": 0.7, "val": 0.3, "test": 0.0}
    with stack.sync_client(timeout=60) as api:
        body = {"project_id": project_id, "name": "s", "ratios": ratios}
        split = post(api, "/splits", body)
        assert split.status_code == 201, split.text
        hyper = FAST | {"epochs": size.epochs, "image_size": 48, "seed": 3}
        body = {"project_id": project_id, "split_id": split.json()["data"]["id"]}
        queued = post(api, "/training/run", body | {"hyperparameters": hyper})
        assert queued.status_code == 202, queued.text
    run_id = queued.json()["data"]["id"]
    follower = Follower(stack, run_id)
    follower.start()
    assert follower.connected.wait(60)
    for n in range(size.kills):
        # when, an epoch more along, the leader of the training stream dies: another node
        # than the one killed last, which comes back first
        wait(
            lambda n=n: len(run(stack, run_id)["history"]) >= n + 1 or _over(stack, run_id), EPOCH_S
        )
        stack.cluster.wait_ready(RESTART_S)  # every node back and current before one more dies
        killed = _kill_next(stack, t.STREAM, killed)
        # and an epoch ends while it is down
        seen = len(run(stack, run_id)["history"])
        wait(
            lambda seen=seen: len(run(stack, run_id)["history"]) > seen or _over(stack, run_id),
            EPOCH_S,
        )
    _bring_back(stack, killed)
    done = wait_status(stack, run_id, "completed", "failed", "interrupted", timeout=900)
    stack.cluster.wait_ready(RESTART_S)
    epochs = list(range(1, size.epochs + 1))
    # then the run completed, every epoch once in the read model and once in the stream
    assert done["status"] == "completed", done
    assert [e["epoch"] for e in done["history"]] == epochs and len(curves(done)) == len(epochs)
    events = stored_events(stack, t.STREAM, t.event_subject(run_id))
    epoch_events = [data for _, kind, data in events if kind == "training.epoch_completed.v1"]
    stored_epochs = [json.loads(data)["epoch"] for data in epoch_events]
    assert stored_epochs == epochs and duplicates(events) == 0
    # and a client following the run live saw every epoch once and its end
    follower.join(120)
    assert follower.epochs() == epochs, follower.events
    assert follower.events[-1][0] == "complete"
    # on one unbroken stream: the gateway's feed waits out the election of its stream
    assert follower.reconnects == 0
    figures.record(
        f"cluster: nodes killed during training ({size.kills})",
        events_appended=len(events),
        events_lost=len(epochs) - len(set(stored_epochs)),
        duplicates_applied=len(stored_epochs) - len(set(stored_epochs)),
        sse_gaps=len(set(epochs) - set(follower.epochs())),
    )


def _kill_next(stack: Stack, stream: str, killed: set[int]) -> set[int]:
    """Bring back the node killed last, then SIGKILL the leader of ``stream`` (or, if that is
    the node just brought back, another): each kill takes a different node down."""
    assert stack.cluster is not None
    for back in killed:
        stack.cluster.restart(back)
    leader = stream_leader(stack, stream)
    victim = leader if leader not in killed else next(i for i in range(NODES) if i not in killed)
    stack.cluster.kill(victim)
    return {victim}


def _bring_back(stack: Stack, killed: set[int]) -> None:
    """Starts the ``killed`` nodes again, without waiting for them to catch up on every stream
    and consumer (seconds, longer than an epoch on a loaded machine): the test goes on, and
    waits for that (``EmbeddedCluster.wait_ready``) only before another node dies. (Started
    from this thread: a node dies with the thread that started it.)"""
    assert stack.cluster is not None
    for i in sorted(killed):
        stack.cluster.nodes[i].restart(ready_timeout=RESTART_S)


def _finished(api: httpx.Client, import_id: str) -> dict | None:
    data = api.get(f"{API}/datasets/import/{import_id}").json()["data"]
    return data if data["state"] in ("completed", "failed", "cancelled") else None


def _over(stack: Stack, run_id: str) -> bool:
    return run(stack, run_id)["status"] not in ("queued", "running")


def test_a_keyed_split_stored_after_its_answer_was_lost_is_answered_on_retry(
    cluster_stack: Stack,
):
    # given a split whose command was stored though the gateway had answered 503 (an election
    # outlasting its wait): the datasets service made it under the id the key derives
    stack = cluster_stack
    source = imagesets.squares(stack.imports / uuid.uuid4().hex, 10)
    with stack.sync_client(timeout=60) as api:
        project_id = post(api, "/projects", {"name": "lost"}).json()["data"]["id"]
        job = post(api, "/datasets/import/local", {"project_id": project_id, "path": str(source)})
        wait(lambda: _finished(api, job.json()["data"]["id"]), timeout=120)
        key = uuid.uuid4().hex
        ratios = {"train": 0.7, "val": 0.3, "test": 0.0}
        first = d.CreateSplit(
            dataset_id=project_id,
            split_id=derived_id(ADMIN, key, "split"),
            name="s",
            actor=ADMIN,
            correlation_id=uuid.uuid4().hex,
            **ratios,
        )
        assert asyncio.run(_send(stack, d.Subjects.CREATE_SPLIT, first))["type"] == ACCEPTED
        # when the client sends its request again with the same key
        body = {"project_id": project_id, "name": "s", "ratios": ratios}
        again = api.post(f"{API}/splits", json=body, headers={"Idempotency-Key": key})
    # then it gets the split its first try made, not "a split named 's' already exists"
    assert again.status_code == 201, again.text
    assert again.json()["data"]["id"] == first.split_id


async def _send(stack: Stack, subject: str, command: d.CreateSplit) -> dict:
    nc = await nats.connect(stack.nats_url.split(","))
    try:
        reply = await nc.request(subject, msgspec.json.encode(command), timeout=30)
        return dict(msgspec.json.decode(reply.data))
    finally:
        await nc.close()

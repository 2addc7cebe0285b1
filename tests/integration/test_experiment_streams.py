"""A search's live streams against the running gateway, its events written straight into the
event store as the trainer's driver writes them (so that no trainer runs: every step is the
test's): the WebSocket and the SSE carry the search's own events, each trial run's epochs name
their trial, ``complete`` is the search's end only, and a late client's snapshot holds the
trials."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contracts import experiments as e
from contracts import new_id
from contracts import training as c
from services.kernel.eventstore import EventStore
from tests.access_helpers import as_user, ok, user
from tests.stack import Stack
from tests.stream_helpers import Runs, SseClient, frame, ws_url

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)
API = "/api/v1"
WAIT_S = 30.0


class Searches(Runs):
    """Appends a search's events (on its own subject) and its trials' runs' events."""

    def __init__(self, nc: Any) -> None:
        super().__init__(nc)
        self.searches: EventStore[Any] = EventStore(
            nc, stream=c.STREAM, subject=e.experiment_subject, event_type=c.Event
        )

    async def say(self, experiment_id: str, *events: Any) -> int:
        version = await self.searches.version(experiment_id)
        return await self.searches.append(experiment_id, list(events), version)

    async def create(self, project_id: str) -> str:
        experiment_id = new_id()
        created = e.ExperimentCreated(
            experiment_id=experiment_id,
            project_id=project_id,
            split_id=new_id(),
            name="search",
            architecture_type="smallcnn",
            search_config={},
            objectives=e.default_objectives(),
            max_trials=2,
            budget=e.Budget(epochs_per_trial=1),
            pruning=e.Pruning(kind="none"),
            seed=0,
        )
        await self.say(experiment_id, created)
        return experiment_id

    async def trial(self, experiment_id: str, project_id: str, number: int) -> str:
        """Trial ``number`` started and its run queued, as the driver does it."""
        run_id = e.trial_run_id(experiment_id, number)
        params = {"model": "smallcnn", "learning_rate": 0.01}
        await self.say(experiment_id, e.TrialStarted(experiment_id, number, run_id, params))
        queued = c.RunQueued(
            run_id=run_id,
            experiment_id=experiment_id,
            project_id=project_id,
            split_id=new_id(),
            hyperparameters=c.Hyperparameters(epochs=1),
            classes=["a", "b"],
            train_images=10,
            val_images=4,
        )
        await self.add(run_id, queued)
        return run_id

    async def trained(self, experiment_id: str, number: int, accuracy: float) -> int:
        """Trial ``number``'s run trains one epoch and completes; the trial completes."""
        run_id = e.trial_run_id(experiment_id, number)
        await self.start(run_id)
        await self.epochs(run_id, 1)
        await self.complete(run_id, 1)
        values = {"val_accuracy": accuracy}
        return await self.say(
            experiment_id,
            e.TrialCompleted(experiment_id, number, run_id, values),
            e.FrontUpdated(experiment_id, [number], {"val_accuracy": number}, {}),
        )


async def frames_until_closed(url: str, headers: dict[str, str]) -> tuple[list[dict], int | None]:
    async with connect(url, additional_headers=headers) as sock:
        return await rest_of(sock)


async def rest_of(sock: Any) -> tuple[list[dict], int | None]:
    """Every message of an open socket until the server closes it, and the close code."""
    messages = []
    try:
        while True:
            messages.append(frame(await asyncio.wait_for(sock.recv(), WAIT_S)))
    except ConnectionClosed:
        pass
    return messages, sock.close_code


async def test_a_search_streams_its_trials_live_and_closes_after_its_complete(stack: Stack):
    nc, searches = await Searches.connect(stack.nats_url)
    project = new_id()
    experiment = await searches.create(project)
    first = await searches.trial(experiment, project, 0)
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    # given a client watching the search from its first trial's queueing
    sock = await connect(url, additional_headers=stack.headers())
    snapshot = frame(await asyncio.wait_for(sock.recv(), WAIT_S))
    watcher = asyncio.create_task(rest_of(sock))
    sse = SseClient(
        stack.base_url, f"{API}/training/{project}/experiments/{experiment}/stream", stack.headers()
    )
    await sse.open()
    await sse.wait(lambda s: "trial_started" in s.names(), WAIT_S)
    # when both trials train, the second better, and the search completes
    await searches.trained(experiment, 0, 0.6)
    await searches.trial(experiment, project, 1)
    await searches.trained(experiment, 1, 0.8)
    await sse.wait(lambda s: s.names().count("trial_completed") == 2, WAIT_S)
    assert not sse.ended  # every trial is over, but the search has not said so yet
    last = await searches.say(experiment, e.ExperimentCompleted(experiment, 2, "max_trials"))
    rest, code = await asyncio.wait_for(watcher, WAIT_S * 2)
    await sse.wait(lambda s: s.ended, WAIT_S)
    await sse.close()
    # then the socket said it all, as text JSON frames, and closed normally after complete
    assert code == 1000
    assert snapshot["type"] == "snapshot"
    assert [t["trial"] for t in snapshot["payload"]["trials"]] == [0]
    assert snapshot["payload"]["trials"][0]["run_id"] == first
    assert snapshot["payload"]["experiment"]["status"] == "running"
    kinds = [m["type"] for m in rest]
    assert kinds.count("trial_started") == 2 and kinds.count("trial_completed") == 2
    assert kinds.count("front_updated") == 2 and kinds.count("complete") == 1
    assert kinds[-1] == "complete" and rest[-1]["payload"]["sequence"] == last
    epochs = [m["payload"] for m in rest if m["type"] == "epoch_end"]
    assert [(p["trial"], p["epoch"]) for p in epochs] == [(0, 1), (1, 1)]
    # a trial run's own end is a status: complete is the search's
    finals = [m["payload"] for m in rest if m["payload"].get("status") == "completed"]
    assert [p["trial"] for p in finals] == [0, 1]
    assert rest[-1]["payload"]["reason"] == "max_trials"
    # and the SSE said the same, ending at the search's complete
    assert sse.ended and sse.names()[-1] == "complete" and sse.names().count("complete") == 1
    assert sse.events[-1][0] == str(last)
    await nc.close()


async def test_a_late_client_gets_a_snapshot_with_the_trials_then_the_history(stack: Stack):
    nc, searches = await Searches.connect(stack.nats_url)
    project = new_id()
    experiment = await searches.create(project)
    await searches.trial(experiment, project, 0)
    await searches.trained(experiment, 0, 0.7)
    last = await searches.say(experiment, e.ExperimentCompleted(experiment, 1, "max_trials"))
    # when a client connects after the search is over
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    messages, code = await frames_until_closed(url, stack.headers())
    # then its first message is a snapshot of the experiment and its trials, then the history
    snapshot = messages[0]
    assert snapshot["type"] == "snapshot" and set(snapshot) == {"type", "payload"}
    (trial,) = snapshot["payload"]["trials"]
    assert trial["trial"] == 0 and trial["state"] == "completed"
    assert trial["values"] == {"val_accuracy": 0.7} and trial["latest"]["epoch"] == 1
    detail = snapshot["payload"]["experiment"]
    assert detail["status"] == "completed" and detail["front"] == [0]
    assert detail["best"] == {"val_accuracy": 0} and detail["reason"] == "max_trials"
    assert [m["type"] for m in messages][-1] == "complete" and code == 1000
    # and an SSE client that already has the end is told so (204), not fed forever
    path = f"{API}/training/{project}/experiments/{experiment}/stream"
    again = SseClient(stack.base_url, path, stack.headers() | {"Last-Event-ID": str(last)})
    await again.open()
    assert again.status == 204
    await nc.close()


async def test_a_stopped_search_streams_on_and_a_resumed_one_ends_at_its_new_complete(
    stack: Stack,
):
    nc, searches = await Searches.connect(stack.nats_url)
    project = new_id()
    experiment = await searches.create(project)
    await searches.trial(experiment, project, 0)
    await searches.say(experiment, e.ExperimentStopped(experiment))
    path = f"{API}/training/{project}/experiments/{experiment}/stream"
    client = SseClient(stack.base_url, path, stack.headers())
    await client.open()
    await client.wait(lambda s: "experiment_stopped" in s.names(), WAIT_S)
    assert not client.ended  # stopped is not over: it may be resumed
    await searches.say(experiment, e.ExperimentResumed(experiment))
    await searches.trained(experiment, 0, 0.5)
    await searches.say(experiment, e.ExperimentCompleted(experiment, 1, "max_trials"))
    await client.wait(lambda s: s.ended, WAIT_S)
    await client.close()
    names = client.names()
    assert client.ended and names[-1] == "complete"
    assert names.index("experiment_stopped") < names.index("experiment_resumed")
    await nc.close()


async def test_a_search_before_its_first_trial_is_known_and_another_projects_is_not(
    stack: Stack,
):
    nc, searches = await Searches.connect(stack.nats_url)
    project = new_id()
    experiment = await searches.create(project)
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    async with connect(url, additional_headers=stack.headers()) as sock:
        snapshot = frame(await asyncio.wait_for(sock.recv(), WAIT_S))
        created = frame(await asyncio.wait_for(sock.recv(), WAIT_S))
    assert snapshot["type"] == "snapshot" and snapshot["payload"]["trials"] == []
    assert created["type"] == "experiment_created"
    # the SSE route names the project: another project's path does not find it
    other = SseClient(
        stack.base_url,
        f"{API}/training/{new_id()}/experiments/{experiment}/stream",
        stack.headers(),
    )
    await other.open()
    assert other.status == 404
    await nc.close()


async def test_a_search_is_another_users_only_as_an_unknown_id(stack: Stack):
    """Before any trial runs (so no run names its project yet), the search's own project
    decides who reads it: a member reads it, a viewer may not change it, anyone else is told
    it does not exist in an unknown id's words."""
    nc, searches = await Searches.connect(stack.nats_url)
    _, alice = user(stack, "alice")
    bob_id, bob = user(stack, "bob")
    with as_user(stack, alice) as api:
        project = ok(api.post(f"{API}/projects", json={"name": "alice's"}), 201)["id"]
        ok(api.post(f"{API}/projects/{project}/members", json={"user_id": bob_id}), 201)
    experiment = await searches.create(project)
    unknown = new_id()
    with as_user(stack, alice) as api:
        assert ok(api.get(f"{API}/experiments/{experiment}"))["project_id"] == project
        listed = ok(api.get(f"{API}/experiments", params={"project_id": project}))["items"]
        assert [item["id"] for item in listed] == [experiment]
    _, carol = user(stack, "carol")
    with as_user(stack, carol) as api:
        for method, path in (
            ("GET", "/experiments/{}"),
            ("POST", "/experiments/{}/stop"),
            ("POST", "/experiments/{}/resume"),
            ("POST", "/experiments/{}/trials/0/promote"),
            ("GET", f"/training/{project}/experiments/{{}}/stream"),
        ):
            theirs = api.request(method, API + path.format(experiment))
            never = api.request(method, API + path.format(unknown))
            assert theirs.status_code == never.status_code == 404, path
            words = theirs.json()["error"]["message"].replace(experiment, "<id>")
            assert words == never.json()["error"]["message"].replace(unknown, "<id>")
        assert ok(api.get(f"{API}/experiments"))["items"] == []
    url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
    async with connect(url, additional_headers={"Authorization": f"Bearer {carol}"}) as sock:
        refused = frame(await asyncio.wait_for(sock.recv(), WAIT_S))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(sock.recv(), WAIT_S)
    assert refused["type"] == "error" and refused["payload"]["code"] == "NOT_FOUND"
    assert sock.close_code == 4404
    # a viewer reads it and is refused every change
    with as_user(stack, bob) as api:
        assert ok(api.get(f"{API}/experiments/{experiment}"))["id"] == experiment
        for change in ("stop", "resume", "trials/0/promote"):
            resp = api.post(f"{API}/experiments/{experiment}/{change}")
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "FORBIDDEN"
    await nc.close()


async def test_the_hub_follows_a_search_to_its_complete(stack: Stack):
    nc, searches = await Searches.connect(stack.nats_url)
    project = new_id()
    experiment = await searches.create(project)
    await searches.trial(experiment, project, 0)
    await searches.trained(experiment, 0, 0.6)
    await searches.say(experiment, e.ExperimentCompleted(experiment, 1, "max_trials"))
    url = ws_url(stack.base_url, "/ws/notebook-search")
    async with connect(url, additional_headers=stack.headers()) as sock:
        subscribe = {"type": "subscribe", "payload": {"experiment_id": experiment}}
        await sock.send(json.dumps(subscribe))
        frames = [frame(await asyncio.wait_for(sock.recv(), WAIT_S))]
        while frames[-1]["type"] != "complete":
            frames.append(frame(await asyncio.wait_for(sock.recv(), WAIT_S)))
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "subscribed" and kinds.count("complete") == 1
    assert {"trial_started", "epoch_end", "trial_completed", "front_updated"} <= set(kinds)
    assert {f["payload"]["experiment_id"] for f in frames} == {experiment}
    assert [f["payload"]["trial"] for f in frames if f["type"] == "epoch_end"] == [0]
    await nc.close()

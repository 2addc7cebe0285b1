"""Experiments through the Python client and the ``studio`` command, against a real studio:
a 2-trial, 1-epoch small-CNN search created with the client, followed over SSE to the
experiment's own end while a WebSocket listens (a ``snapshot``, then ``{type, payload}``
messages), read back with its trials, front and runs, its best trial promoted to an export; a
followed search's feed ending at its stop, and going on to its end once resumed; and
``studio experiments create --follow --json`` run as a user would, its one JSON document
parsed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio_client import AsyncStudioClient, StudioClient
from studio_client.experiments import fixed, float_range
from studio_client.models import SocketMessage, StreamEvent
from tests import imagesets
from tests.client_helpers import signed_in
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
#: Each trial trains the small CNN on ``imagesets.squares`` for one epoch: seconds on a CPU.
SPACE = {
    "model": fixed("smallcnn"),
    "learning_rate": float_range(1e-3, 1e-2, log=True),
    "batch_size": fixed(8),
    "image_size": fixed(32),
    "augmentation": fixed("none"),
}
#: The longest a 2-trial search may take on a loaded 2-core machine before the test gives up.
SEARCH_S = 300
COMPLETED = "training.experiment_completed.v1"


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[StudioClient]:
    with signed_in(stack) as client:
        yield client


@pytest.fixture(scope="module")
def split(stack: Stack, studio: StudioClient) -> tuple[str, str]:
    """A project with a learnable two-class set and a train/val/test split: (project, split)."""
    project = studio.projects.create(f"exp-{uuid.uuid4().hex[:6]}")
    root = imagesets.squares(stack.imports / uuid.uuid4().hex, 10)
    job = studio.imports.local(project.id, root, format="folder")
    assert studio.imports.wait(job.id, timeout=60).state == "completed"
    made = studio.splits.create(project.id, "s", ratios=(0.5, 0.25, 0.25), seed=1)
    return project.id, made.id


async def search_followed(
    stack: Stack, project_id: str, split_id: str
) -> tuple[str, list[StreamEvent], list[SocketMessage], int]:
    """A search created with the async client, followed over SSE to its end while its
    WebSocket listens: (its id, the SSE events, the socket's messages, their count)."""
    async with AsyncStudioClient(stack.base_url, token=stack.token()) as client:
        experiment = await client.experiments.create(
            project_id,
            split_id,
            "client-search",
            architecture_type="smallcnn",
            search_config=SPACE,
            max_trials=2,
            objectives=["val_accuracy"],
            epochs_per_trial=1,
            pruning="none",
            seed=3,
        )
        messages: list[SocketMessage] = []
        async with asyncio.timeout(SEARCH_S):
            socket = asyncio.create_task(
                client.experiments.connect_websocket(experiment.id, messages.append)
            )
            events = [event async for event in client.experiments.follow(experiment.id)]
            count = await socket
    return experiment.id, events, messages, count


def test_a_search_is_created_followed_to_its_end_and_read_back(
    stack: Stack, studio: StudioClient, split: tuple[str, str]
) -> None:
    # given a search of 2 trials of 1 epoch, followed over SSE while a socket listens
    experiment_id, events, messages, count = asyncio.run(search_followed(stack, *split))

    # then the feed told each trial's start and end, the front, and ended at the search's end
    names = [e.event for e in events]
    assert {"trial_started", "trial_completed", "front_updated"} <= set(names), names
    assert sorted(e.data["trial"] for e in events if e.event == "trial_started") == [0, 1]
    assert events[-1].event == "complete" and events[-1].data.get("type") == COMPLETED
    assert all("trial" in e.data for e in events if e.event == "epoch_end"), names
    stored = [e.id for e in events if e.id is not None]
    assert stored == sorted(set(stored)), "an event was repeated or came out of order"

    # and the socket gave a snapshot, then {type, payload} messages to the search's end
    assert messages and messages[0].type == "snapshot", [m.type for m in messages]
    assert count == len(messages) > 1
    assert all(isinstance(m.type, str) and isinstance(m.payload, dict) for m in messages)
    assert "trial_completed" in {m.type for m in messages}
    assert messages[-1].type == "complete"

    # and the blocking client reads it back: two completed trials, a front, the best trial
    done = studio.experiments.get(experiment_id)
    assert done.status == "completed" and len(done.trials) == 2, done
    assert {t.state for t in done.trials} == {"completed"}
    assert all(0.0 <= t.values["val_accuracy"] <= 1.0 for t in done.trials)
    assert all(1e-3 <= t.params["learning_rate"] <= 1e-2 for t in done.trials)
    assert done.front and set(done.front) <= {0, 1} and done.best["val_accuracy"] in (0, 1)
    assert experiment_id in {e.id for e in studio.experiments.list(project_id=split[0]).items}

    # and each trial is an ordinary run of the experiment, trained once
    runs = studio.runs.list(experiment_id=experiment_id)
    assert sorted(r.id for r in runs) == sorted(t.run_id or "" for t in done.trials)
    assert all(r.status == "completed" and r.epochs_done == 1 for r in runs)

    # when the front's first trial is promoted
    best = done.front[0]
    promotion = studio.experiments.promote(experiment_id, best)
    assert promotion.evaluation_id and promotion.export_id
    assert promotion.run_id == (done.trial(best) or done.trials[0]).run_id

    # then its run is evaluated on the test subset and exported, and the trial says so
    evaluation = studio.evaluations.wait(promotion.evaluation_id, timeout=SEARCH_S)
    assert evaluation.status == "completed" and evaluation.subset == "test", evaluation.error
    export = studio.exports.wait(promotion.export_id, timeout=SEARCH_S)
    assert export.status == "completed" and export.run_id == promotion.run_id, export.error
    promoted = studio.experiments.get(experiment_id).trial(best)
    assert promoted is not None and promoted.promoted, promoted


def test_the_command_line_creates_and_follows_a_search_as_one_json_document(
    stack: Stack, split: tuple[str, str], tmp_path: Path
) -> None:
    # given the command a script would run
    project_id, split_id = split
    args = [
        "experiments", "create", project_id, "--split", split_id, "--name", "cli-search",
        "--family", "smallcnn", "--max-trials", "2", "--epochs-per-trial", "1",
        "--model", "smallcnn", "--learning-rate", "1e-3..1e-2:log", "--param", "batch_size=8",
        "--param", "image_size=32", "--param", "augmentation=none", "--pruning", "none",
        "--seed", "5", "--follow", "--json",
    ]  # fmt: skip
    env = os.environ | {
        "STUDIO_URL": stack.base_url,
        "STUDIO_TOKEN": stack.token(),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    env.pop("STUDIO_API_KEY", None)

    # when it runs to the search's end
    done = subprocess.run(
        [sys.executable, "-m", "studio_client.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SEARCH_S,
        check=False,
    )

    # then stdout is one JSON document: the search as it ended
    assert done.returncode == 0, done.stderr
    experiment = json.loads(done.stdout)
    assert experiment["status"] == "completed" and experiment["name"] == "cli-search"
    assert len(experiment["trials"]) == 2 and experiment["front"]
    assert {t["params"]["model"] for t in experiment["trials"]} == {"smallcnn"}


async def test_a_followed_search_ends_its_feed_when_stopped_and_resumes_to_its_end(
    stack: Stack, split: tuple[str, str]
) -> None:
    async with (
        AsyncStudioClient(stack.base_url, token=stack.token()) as studio,
        asyncio.timeout(SEARCH_S),
    ):
        # given a search of 3 trials of 2 epochs, followed from its start
        experiment = await studio.experiments.create(
            *split, "stop-resume", architecture_type="smallcnn", search_config=SPACE,
            max_trials=3, epochs_per_trial=2, pruning="none", seed=11,
        )  # fmt: skip
        names: list[str] = []
        async for event in studio.experiments.follow(experiment.id):
            names.append(event.event)
            # when it is stopped as its first trial starts
            if event.event == "trial_started" and names.count("trial_started") == 1:
                assert (await studio.experiments.stop(experiment.id)).id == experiment.id

        # then the feed ended at the stop, and the search is stopped
        assert names[-1] == "experiment_stopped" and "complete" not in names, names
        assert (await studio.experiments.get(experiment.id)).status == "stopped"

        # when it is resumed and followed again, then it searches on to its end
        assert (await studio.experiments.resume(experiment.id)).id == experiment.id
        after = [e.event async for e in studio.experiments.follow(experiment.id)]
        assert after[-1] == "complete", after
        done = await studio.experiments.get(experiment.id)
    assert done.status == "completed" and 1 <= len(done.trials) <= 3, done
    assert len({t.run_id for t in done.trials}) == len(done.trials)

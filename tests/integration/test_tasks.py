"""The one task view against the whole studio: a user's import, run, evaluation and export each
answer 202 with their task's id and ``check_url``, each is one task of its kind that ends
``completed`` with what it produced, the list filters and pages them, and another user is told
that none of them exists. (Each status a job passes through is checked, event by event, in
``test_tasks_lifecycle.py``.)"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.access_helpers import as_user, finished, ok, project, split, user
from tests.imagesets import squares, zip_dir
from tests.stack import Stack
from tests.training_helpers import API, FAST, wait

pytestmark = pytest.mark.integration
STACK_SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
KINDS = ("import", "training", "evaluation", "export")


def task_of(answer: dict[str, Any]) -> str:
    """A 202's task: its id, after checking that the answer names where to check on it."""
    assert answer["task_id"] == answer["id"], answer
    assert answer["check_url"] == f"/api/v1/tasks/{answer['id']}", answer
    return str(answer["task_id"])


def settled(api: httpx.Client, task_id: str) -> dict[str, Any]:
    done = ("completed", "failed", "cancelled")
    return wait(lambda: (t := ok(api.get(f"{API}/tasks/{task_id}")))["status"] in done and t, 240)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def journey(stack: Stack) -> dict[str, Any]:
    """A user's project with one job of every kind, each from its 202 answer."""
    user_id, token = user(stack, "tina")
    with as_user(stack, token) as api:
        project_id = project(api, "tasks")
        root = squares(stack.imports / uuid.uuid4().hex, 12)
        body = {"project_id": project_id, "path": str(root)}
        imported = ok(api.post(f"{API}/datasets/import/local", json=body), 202)
        wait(lambda: ok(api.get(f"{API}/datasets/import/{imported['id']}"))["state"] == "completed")
        split_id = split(api, project_id)
        body = {"project_id": project_id, "split_id": split_id, "hyperparameters": FAST}
        body["hyperparameters"] = FAST | {"epochs": 1}
        run = ok(api.post(f"{API}/training/run", json=body), 202)
        assert finished(api, f"{API}/training/runs/{run['id']}")["status"] == "completed"
        evaluation = ok(api.post(f"{API}/evaluation/run", json={"run_id": run["id"]}), 202)
        assert finished(api, f"{API}/evaluation/{evaluation['id']}")["status"] == "completed"
        export = ok(api.post(f"{API}/export/run", json={"run_id": run["id"]}), 202)
        assert finished(api, f"{API}/export/{export['id']}")["status"] == "completed"
    answers = dict(zip(KINDS, (imported, run, evaluation, export), strict=True))
    return {"token": token, "user_id": user_id, "project_id": project_id, "answers": answers}


def test_every_202_names_its_task_and_the_task_ends_completed_with_its_result(stack, journey):
    with as_user(stack, journey["token"]) as api:
        for kind, answer in journey["answers"].items():
            task = settled(api, task_of(answer))
            # then it is one task of its kind, of the project, over, with what it produced
            assert task["kind"] == kind and task["status"] == "completed", task
            assert task["project_id"] == journey["project_id"], task
            assert task["progress"] == 1.0 and task["error"] is None, task
            assert task["created_at"] <= task["started_at"] <= task["finished_at"], task
            assert task["created_by"] == journey["user_id"]
            assert task["check_url"] == f"/api/v1/tasks/{answer['id']}"
            for link in task["result"]["links"].values():  # every link answers its owner
                assert api.get(link).status_code == 200, (kind, link)
    imported, run = journey["answers"]["import"], journey["answers"]["training"]
    with as_user(stack, journey["token"]) as api:
        assert ok(api.get(f"{API}/tasks/{imported['id']}"))["result"]["imported"] == 24
        result = ok(api.get(f"{API}/tasks/{run['id']}"))["result"]
        assert result["epochs"] == 1 and result["best_epoch"] == 1


def test_the_list_filters_by_kind_status_and_project_and_pages(stack, journey):
    ids = {kind: a["id"] for kind, a in journey["answers"].items()}
    pid = journey["project_id"]
    with as_user(stack, journey["token"]) as api:
        every = ok(api.get(f"{API}/tasks", params={"project_id": pid}))
        # then the project's four jobs, newest first
        assert every["total"] == 4 and every["limit"] == 50 and every["offset"] == 0
        assert [t["task_id"] for t in every["items"]] == [ids[k] for k in reversed(KINDS)]
        for kind in KINDS:
            only = ok(api.get(f"{API}/tasks", params={"kind": kind}))
            assert [t["task_id"] for t in only["items"]] == [ids[kind]], kind
        done = ok(api.get(f"{API}/tasks", params={"status": "completed", "project_id": pid}))
        assert done["total"] == 4
        assert ok(api.get(f"{API}/tasks", params={"status": "pending"}))["total"] == 0
        pages = [
            ok(api.get(f"{API}/tasks", params={"limit": 3, "offset": offset})) for offset in (0, 3)
        ]
        assert [len(p["items"]) for p in pages] == [3, 1] and pages[1]["total"] == 4
        paged = [t["task_id"] for p in pages for t in p["items"]]
        assert paged == [t["task_id"] for t in every["items"]]


def test_another_users_tasks_are_unknown_to_them(stack, journey):
    _, token = user(stack, "otto")
    run_id = journey["answers"]["training"]["id"]
    with as_user(stack, token) as api:
        theirs = api.get(f"{API}/tasks/{run_id}")
        unknown = api.get(f"{API}/tasks/{uuid.uuid4().hex}")
        # then one of tina's tasks reads as a task that does not exist
        assert theirs.status_code == unknown.status_code == 404
        mine, never = theirs.json()["error"], unknown.json()["error"]
        assert mine["code"] == never["code"] == "NOT_FOUND"
        assert mine["message"] == f"task {run_id} does not exist"
        # and the lists show none of them, by project or at all
        assert ok(api.get(f"{API}/tasks"))["total"] == 0
        by_project = api.get(f"{API}/tasks", params={"project_id": journey["project_id"]})
        assert by_project.status_code == 404
        assert by_project.json()["error"]["field"] == "project_id"


@pytest.mark.parametrize("name", ["kind", "status"])
def test_an_unknown_filter_word_is_a_422_naming_its_field(stack, journey, name):
    with as_user(stack, journey["token"]) as api:
        resp = api.get(f"{API}/tasks", params={name: "sometimes"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "VALIDATION_ERROR"
    assert resp.json()["error"]["field"] == name


def test_the_api_alias_answers_the_same_task(stack, journey):
    run_id = journey["answers"]["training"]["id"]
    with as_user(stack, journey["token"]) as api:
        assert ok(api.get(f"/api/tasks/{run_id}")) == ok(api.get(f"{API}/tasks/{run_id}"))


def test_a_resumed_run_answers_with_its_task_which_runs_again_to_completion(stack, journey):
    run_id = journey["answers"]["training"]["id"]
    with as_user(stack, journey["token"]) as api:
        before = ok(api.get(f"{API}/tasks/{run_id}"))
        resumed = api.post(f"{API}/training/runs/{run_id}/resume", json={"epochs": 2})
        # then the resume's 202 names the same task, which is no longer over
        answer = ok(resumed, 202)
        assert task_of(answer) == run_id
        again = ok(api.get(answer["check_url"]))
        assert again["status"] in ("pending", "processing", "completed"), again
        done = settled(api, run_id)
        assert done["status"] == "completed" and done["result"]["epochs"] == 2, done
        assert done["started_at"] == before["started_at"]  # when it first started
        assert done["finished_at"] > before["finished_at"]


def test_a_job_started_twice_with_one_idempotency_key_is_one_job(stack, journey, tmp_path):
    # given the user's project with a finished run, and a key per job a client retries with
    project_id = journey["project_id"]
    run = journey["answers"]["training"]
    root = squares(stack.imports / uuid.uuid4().hex, 3)
    posts = {
        "import": ("datasets/import/local", {"project_id": project_id, "path": str(root)}),
        "training": (
            "training/run",
            {"project_id": project_id, "split_id": run["split_id"], "hyperparameters": FAST},
        ),
        "evaluation": ("evaluation/run", {"run_id": run["id"]}),
        "export": ("export/run", {"run_id": run["id"]}),
    }
    with as_user(stack, journey["token"]) as api:
        before = ok(api.get(f"{API}/tasks", params={"project_id": project_id}))["total"]
        for kind, (path, body) in posts.items():
            key = {"Idempotency-Key": f"{kind}-{uuid.uuid4().hex}"}
            # when the same start is sent twice under one key
            first = api.post(f"{API}/{path}", json=body, headers=key)
            again = api.post(f"{API}/{path}", json=body, headers=key)
            # then the retry is told the first job, and no second one starts
            assert first.status_code == again.status_code == 202, (kind, again.text)
            assert again.json()["data"]["id"] == first.json()["data"]["id"], kind
            assert again.headers.get("Idempotent-Replayed") == "true", kind
            settled(api, first.json()["data"]["id"])
        # and an upload retried under one key is one import
        archive = zip_dir(squares(tmp_path / "zip", 3), tmp_path / "set.zip").read_bytes()
        upload = {
            "params": {"project_id": project_id},
            "content": archive,
            "headers": {
                "Idempotency-Key": f"upload-{uuid.uuid4().hex}",
                "Content-Type": "application/zip",
            },
        }
        ids = [ok(api.post(f"{API}/datasets/import/upload", **upload), 202)["id"] for _ in range(2)]
        assert ids[0] == ids[1]
        settled(api, ids[0])
        after = ok(api.get(f"{API}/tasks", params={"project_id": project_id}))["total"]
    assert after == before + len(posts) + 1

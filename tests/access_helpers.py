"""Shared steps of the authorization tests: users, and a user's project with everything in it
(images, a split, a small real run, an evaluation, an export, an API key), made through the API
as that user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from typing import Any

import httpx

from tests import imagesets
from tests.stack import Stack
from tests.training_helpers import API, FAST, wait

PASSWORD = "a-long-test-password"


def user(stack: Stack, prefix: str, role: str = "user") -> tuple[str, str]:
    """A new user (a unique name) and their access token."""
    user_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    stack.create_user(user_id, PASSWORD, role=role)
    return user_id, stack.sign_in(user_id, PASSWORD)


def as_user(stack: Stack, token: str, timeout: float = 30) -> httpx.Client:
    return stack.sync_client(token=token, timeout=timeout)


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json()["data"] if resp.content else None


def project(api: httpx.Client, name: str = "p") -> str:
    return str(ok(api.post(f"{API}/projects", json={"name": name}), 201)["id"])


def images(stack: Stack, api: httpx.Client, project_id: str, per_class: int = 12) -> str:
    """Imports a learnable two-class set of images no other call makes (an image's id is its
    content) into the project; returns the import's id."""
    start = uuid.uuid4().int % 10**9
    root = imagesets.squares(stack.imports / uuid.uuid4().hex, per_class, start=start)
    body = {"project_id": project_id, "path": str(root)}
    job = ok(api.post(f"{API}/datasets/import/local", json=body), 202)
    wait(lambda: ok(api.get(f"{API}/datasets/import/{job['id']}"))["state"] == "completed")
    return str(job["id"])


def split(api: httpx.Client, project_id: str, test: float = 0.25) -> str:
    ratios = {"train": 0.75 - test if test else 0.7, "val": 0.25 if test else 0.3, "test": test}
    body = {"project_id": project_id, "name": f"s-{uuid.uuid4().hex[:6]}", "ratios": ratios}
    return str(ok(api.post(f"{API}/splits", json=body), 201)["id"])


def finished(api: httpx.Client, path: str, timeout: float = 240) -> dict[str, Any]:
    done = ("completed", "failed", "stopped")
    return wait(lambda: (d := ok(api.get(path)))["status"] in done and d, timeout)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class World:
    """One user's things: every id a route may be asked about."""

    user_id: str
    token: str
    project_id: str
    import_id: str
    image_id: str
    split_id: str
    run_id: str
    experiment_id: str
    evaluation_id: str
    export_id: str
    key_id: str
    #: A task of the task view: the run's (a task's id is its job's).
    task_id: str

    def ids(self) -> dict[str, str]:
        """Every id by its path parameter's name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "token"}


def world(stack: Stack, prefix: str) -> World:
    """A user owning a project with images, a split, a trained run (one epoch), a completed
    evaluation and export, and an API key."""
    user_id, token = user(stack, prefix)
    with as_user(stack, token) as api:
        project_id = project(api, f"{prefix}'s")
        import_id = images(stack, api, project_id)
        image_id = ok(api.get(f"{API}/datasets/{project_id}/images?limit=1"))["items"][0]["id"]
        split_id = split(api, project_id)
        body = {"project_id": project_id, "split_id": split_id, "hyperparameters": FAST}
        body["hyperparameters"] = FAST | {"epochs": 1}
        run = ok(api.post(f"{API}/training/run", json=body), 202)
        assert finished(api, f"{API}/training/runs/{run['id']}")["status"] == "completed"
        evaluation = ok(api.post(f"{API}/evaluation/run", json={"run_id": run["id"]}), 202)
        assert finished(api, f"{API}/evaluation/{evaluation['id']}")["status"] == "completed"
        export = ok(api.post(f"{API}/export/run", json={"run_id": run["id"]}), 202)
        assert finished(api, f"{API}/export/{export['id']}")["status"] == "completed"
        key = ok(api.post(f"{API}/auth/keys", json={"name": "script"}), 201)
    return World(
        user_id=user_id,
        token=token,
        project_id=project_id,
        import_id=import_id,
        image_id=image_id,
        split_id=split_id,
        run_id=run["id"],
        experiment_id=run["experiment_id"],
        evaluation_id=evaluation["id"],
        export_id=export["id"],
        key_id=key["key_id"],
        task_id=run["id"],
    )

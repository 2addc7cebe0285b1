"""A scripted workload of the studio and a stable hash of what it leaves behind.

``Workload`` walks the user's journey through the REST API, once per project: create a
project, import a small image set, split it, train, evaluate, export. It is written for a studio
whose processes die under it (``test_chaos.py``): every request is retried, a POST under one
``Idempotency-Key`` (so a retried create is one create), until the studio answers; a run that a
kill interrupted is resumed until it completes. ``milestone`` is told when the journey reaches a
moment worth a kill (``MILESTONES``), once per project, and returns before the journey goes on.
``state`` reads back, through the API, every read model's view of those projects and normalises
it so that two runs of the same workload compare equal: generated ids, timestamps, durations
and paths are dropped, projects are keyed by name, lists keep their order (every list read is
ordered by the API). ``digest`` is its sha256; ``differences`` names every place where two
states differ (and none where their digests agree).

Imports httpx and ``tests`` helpers only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests import imagesets
from tests.stack import API, admin_headers
from tests.training_helpers import FAST

#: Answers that say "not now": the studio (or one of its services) is restarting.
RETRY_STATUSES = {502, 503, 504}
#: Keys whose values differ between two runs of one workload: ids, clocks, paths, positions.
VOLATILE = re.compile(
    r"(^id$|_id$|_ids$|^ids$|_at$|^at$|url|path|link|second|_s$|_ms$|latency|duration|"
    r"elapsed|sequence|position|version|throughput|per_s|request|started|finished|created|"
    r"updated|actor|by$|trace|instance|holder|worker|host|object|^name$|file|source)",
    re.IGNORECASE,
)
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
ENDED = ("completed", "failed", "stopped", "interrupted", "cancelled")
#: The moments of a journey that ``Workload.milestone`` hears of: a project created, its import
#: accepted (the import runs), its split created, its run past its first epoch (still running),
#: its evaluation accepted, its export accepted (the export runs).
MILESTONES = ("project", "import", "split", "epoch", "evaluation", "export")
#: Says nothing of missing keys' values: two states differ where one lacks a key the other has.
MISSING = object()


class Workload:
    """The journey of ``projects`` projects, each named ``<prefix>-<n>``, against ``base_url``."""

    def __init__(
        self,
        base_url: str,
        imports: Path,
        prefix: str,
        *,
        projects: int = 1,
        per_class: int = 10,
        epochs: int = 2,
        patience: float = 300.0,
        milestone: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url, self.imports, self.prefix = base_url, imports, prefix
        self.projects, self.per_class, self.epochs = projects, per_class, epochs
        self.patience = patience
        self.milestone = milestone or (lambda _: None)
        #: The milestones the current journey reached.
        self.reached: set[str] = set()
        self.resumes = 0
        self.retries = 0
        #: The longest time a request went unanswered (tried again and again), in seconds.
        self.longest_outage_s = 0.0
        self._headers: dict[str, str] | None = None

    # --- requests that ride out restarts ----------------------------------------------------

    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = self._patiently(lambda: admin_headers(self.base_url))
        return self._headers

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        # One key for every try of this POST: a create whose answer a kill lost is one create.
        return self.call("POST", path, json=body, key=uuid.uuid4().hex)

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        """The ``data`` of the answer, retrying while the studio cannot answer."""
        headers = self.headers() | ({"Idempotency-Key": key} if key else {})

        def once() -> Any:
            resp = httpx.request(
                method, self.base_url + path, headers=headers, timeout=30, **kwargs
            )
            if resp.status_code in RETRY_STATUSES or (resp.status_code == 409 and key):
                return None  # 409: the same key's first try still runs
            assert resp.status_code < 400, f"{method} {path}: {resp.status_code} {resp.text}"
            return resp.json()["data"]

        return self._patiently(once)

    def _patiently(self, attempt: Any) -> Any:
        began = time.monotonic()
        deadline, failed = began + self.patience, False
        while True:
            try:
                value = attempt()
            except (httpx.TransportError, RuntimeError):
                value = None  # the gateway (or identity, when signing in) is down
            if value is not None:
                if failed:
                    outage = time.monotonic() - began
                    self.longest_outage_s = max(self.longest_outage_s, outage)
                return value
            assert time.monotonic() < deadline, "the studio did not answer in time"
            self.retries += 1
            failed = True
            time.sleep(0.25)

    def until(self, path: str, done: Any) -> Any:
        """The resource at ``path`` once ``done(it)``, read again and again meanwhile."""
        deadline = time.monotonic() + self.patience
        while not done(found := self.get(path)):
            assert time.monotonic() < deadline, f"{path} never settled: {found}"
            time.sleep(0.2)
        return found

    # --- the journey ------------------------------------------------------------------------

    def run(self) -> None:
        for n in range(self.projects):
            self.journey(f"{self.prefix}-{n}", seed=n)

    def journey(self, name: str, seed: int) -> None:
        project_id = self.post(f"{API}/projects", {"name": name})["id"]
        self.reached = set()
        self.reach("project")
        self.finish_import(project_id, imagesets.squares(self.imports / name, self.per_class))
        ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
        split = self.post(
            f"{API}/splits", {"project_id": project_id, "name": "s", "ratios": ratios}
        )
        self.reach("split")
        hyper = FAST | {"epochs": self.epochs, "seed": seed}
        body = {"project_id": project_id, "split_id": split["id"], "hyperparameters": hyper}
        run_id = self.post(f"{API}/training/run", body)["id"]
        self.finish_run(run_id)
        evaluation = self.post(f"{API}/evaluation/run", {"run_id": run_id})
        self.reach("evaluation")
        self.finish(f"{API}/evaluation/{evaluation['id']}", f"{API}/evaluation/run", run_id)
        export = self.post(f"{API}/export/run", {"run_id": run_id})
        self.reach("export")
        self.finish(f"{API}/export/{export['id']}", f"{API}/export/run", run_id)

    def reach(self, milestone: str) -> None:
        """Tells ``milestone`` (once a journey) that the journey reached it."""
        if milestone not in self.reached:
            self.reached.add(milestone)
            self.milestone(milestone)

    def finish_import(self, project_id: str, root: Path) -> None:
        """Imports ``root``; an import a kill interrupted is asked for again, until it completes
        (the service ends an import it left running as failed when it starts again)."""
        while True:
            body = {"project_id": project_id, "path": str(root)}
            job = self.post(f"{API}/datasets/import/local", body)
            self.reach("import")
            path = f"{API}/datasets/import/{job['id']}"
            imported = self.until(path, lambda j: j["state"] in ENDED)
            if imported["state"] == "completed":
                return
            assert (imported["error"] or {}).get("code") == "INTERRUPTED", imported
            self.resumes += 1

    def finish_run(self, run_id: str) -> None:
        """Waits for the run to end; one that a kill interrupted is resumed, until it completes.
        The ``epoch`` milestone is reached the first time the run is seen running past an epoch
        (or, if it never is, once it completed)."""
        heard = False

        def ended(run: dict[str, Any]) -> bool:
            nonlocal heard
            if not heard and run["status"] == "running" and run["epochs_done"] >= 1:
                heard = True
                self.reach("epoch")
            return run["status"] in ENDED

        while True:
            run = self.until(f"{API}/training/runs/{run_id}", ended)
            if run["status"] == "completed":
                self.reach("epoch")  # a run too quick to be seen running past an epoch
                return
            assert run["status"] == "interrupted", run
            self.resumes += 1
            self.post(f"{API}/training/runs/{run_id}/resume")

    def finish(self, path: str, again: str, run_id: str) -> None:
        """Waits for an evaluation or export; one a kill interrupted is asked for again."""
        while True:
            job = self.until(path, lambda j: j["status"] in ENDED)
            if job["status"] == "completed":
                return
            # A job its service left running when killed ends failed with INTERRUPTED.
            assert (job["error"] or {}).get("code") == "INTERRUPTED", job
            self.resumes += 1
            path = path.rsplit("/", 1)[0] + "/" + self.post(again, {"run_id": run_id})["id"]

    # --- what it left -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Every read model's view of the workload's projects, normalised (see the module)."""
        mine = [
            p
            for p in self.get(f"{API}/projects", status="all", limit=500)["items"]
            if p["name"].startswith(f"{self.prefix}-")
        ]
        return {p["name"].removeprefix(self.prefix): self.project(p["id"]) for p in mine}

    def project(self, project_id: str) -> dict[str, Any]:
        runs = self.get(f"{API}/training/runs", project_id=project_id)["items"]
        completed = [r for r in runs if r["status"] == "completed"]
        views: dict[str, Any] = {
            "project": self.get(f"{API}/projects/{project_id}"),
            "dataset": self.get(f"{API}/datasets/{project_id}"),
            "images": self.get(f"{API}/datasets/{project_id}/images", limit=500),
            "health": self.get(f"{API}/datasets/{project_id}/health"),
            "splits": self.get(f"{API}/splits", project_id=project_id),
            "runs": [self.get(f"{API}/training/runs/{r['id']}") for r in runs],
            "evaluations": [
                self.get(f"{API}/evaluation", run_id=r["id"])["items"] for r in completed
            ],
            "exports": self.get(f"{API}/export", project_id=project_id)["items"],
            "tasks": [
                (t["kind"], t["status"])
                for t in self.get(f"{API}/tasks", project_id=project_id)["items"]
            ],
        }
        # A job (import, evaluation, export) a kill interrupted and that was asked for again
        # leaves its interrupted twin: what counts is that each kind ended completed, once.
        views["tasks"] = sorted({kt for kt in views["tasks"] if kt[1] == "completed"})
        imports = views["dataset"].get("imports", [])
        views["dataset"]["imports"] = [i for i in imports if i["state"] == "completed"]
        views["evaluations"] = [completed_only(e) for e in views["evaluations"]]
        views["exports"] = completed_only(views["exports"])
        # A checkpoint file (and the bundle that packs one) holds its epochs' wall-clock times,
        # so its bytes differ from run to run; and its size with them: a run resumed from a
        # checkpoint pickles a string that the uninterrupted process shared between the
        # optimizer and the hyperparameters (one memo reference there) in full, 17 bytes more,
        # which can cross the file's 64-byte record alignment. The weights, optimizer and
        # random state it holds are compared through the metrics and the ONNX file's sha256,
        # which is deterministic. A run's ``attempt`` counts its starts: one more per resume,
        # which is the faults' doing; that it completed, with the same metrics, is compared.
        for run in views["runs"]:
            checkpoints = run.get("checkpoints", [])
            run["checkpoints"] = [without(k, "sha256", "size") for k in checkpoints]
            run.pop("attempt", None)
        views["exports"] = [
            without(e, "checkpoint_sha256", "bundle_sha256", "bundle_size")
            for e in views["exports"]
        ]
        return normalise(views)


def without(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys}


def completed_only(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i.get("status") == "completed"]


def normalise(value: Any) -> Any:
    """``value`` without what differs between two runs of one workload (see the module)."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in sorted(value.items()) if not VOLATILE.search(k)}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        return HEX_ID.sub("<id>", value)
    return value


def digest(state: Any) -> str:
    """A stable sha256 of a normalised state."""
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def differences(found: Any, expected: Any, at: str = "") -> list[str]:
    """Where two states differ, as ``path: found != expected`` lines (for a failing test): every
    difference ``digest`` sees, a key one lacks (``<missing>``) and a value of another JSON type
    (``1`` against ``1.0``, ``-0.0`` against ``0.0``) included, so that no lines mean equal
    digests."""
    if isinstance(found, dict) and isinstance(expected, dict):
        return [
            line
            for key in sorted(set(found) | set(expected))
            for line in differences(
                found.get(key, MISSING), expected.get(key, MISSING), f"{at}.{key}"
            )
        ]
    if isinstance(found, list) and isinstance(expected, list) and len(found) == len(expected):
        return [
            line
            for i, (f, e) in enumerate(zip(found, expected, strict=True))
            for line in differences(f, e, f"{at}[{i}]")
        ]
    if found is not MISSING and expected is not MISSING and _json(found) == _json(expected):
        return []
    return [f"{at}: {_shown(found)} != {_shown(expected)}"]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _shown(value: Any) -> str:
    return "<missing>" if value is MISSING else repr(value)

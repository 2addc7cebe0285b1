"""The ``studio`` command line against a real studio: a whole journey from sign-in to a
prediction, as a person (tables, lines) and as a script (``--json``), and the failures a
person meets (an unknown project, bad ratios, no sign-in) each with its message and exit code.

Commands run in-process through click's ``CliRunner`` (the very group ``studio`` runs), with
the config folder in a temporary ``XDG_CONFIG_HOME``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from services.cli import cli
from tests import imagesets
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack

pytestmark = pytest.mark.integration

#: Nothing of the machine's own environment may choose the studio or the credential.
CLEAN = {"STUDIO_URL": None, "STUDIO_TOKEN": None, "STUDIO_API_KEY": None, "STUDIO_PASSWORD": None}
FAST = ("--model", "smallcnn", "--batch-size", "8", "--image-size", "32", "--seed", "7")
FAST_PARAMS = ("--learning-rate", "0.003", "--param", "augmentation=none")


class Terminal:
    """``studio`` as typed in a shell whose config folder is ``config``."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> Result:
        env = CLEAN | {"XDG_CONFIG_HOME": str(self.config), "COLUMNS": "200"}
        result = self.runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        return json.loads(result.stdout)  # the whole of stdout is one document


@pytest.fixture(scope="module")
def studio(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    terminal = Terminal(tmp_path_factory.mktemp("config"))
    terminal("login", "--url", stack.base_url, "--user", ADMIN, "--password-stdin",
             input=ADMIN_PASSWORD + "\n")  # fmt: skip
    yield terminal


@pytest.fixture(scope="module")
def project(studio: Terminal) -> dict[str, Any]:
    return studio.json("projects", "create", f"cli-{uuid.uuid4().hex[:8]}")


def test_login_keeps_the_session_private_and_names_who_one_is(studio: Terminal) -> None:
    stored = studio.config / "ai-studio" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    saved = json.loads(stored.read_text())
    assert saved["user"] == ADMIN and saved["access_token"] and saved["refresh_token"]
    assert ADMIN_PASSWORD not in stored.read_text()
    assert studio.json("whoami")["id"] == ADMIN


def test_the_whole_journey_from_the_terminal(
    stack: Stack, studio: Terminal, project: dict[str, Any], tmp_path: Path
) -> None:
    name = project["name"]
    # import a server folder (by the project's name) and a ZIP of one's own (by its id)
    folder = imagesets.squares(stack.imports / uuid.uuid4().hex, per_class=16)
    first = studio.json("import", name, str(folder), "--format", "folder")
    assert first["state"] == "completed" and first["report"]["imported"] == 32, first
    archive = imagesets.zip_dir(
        imagesets.squares(tmp_path / "more", 8, start=500), tmp_path / "more.zip"
    )
    shown = studio("import", project["id"], str(archive))
    assert "Imported 16 of 16 files" in shown.stdout, shown.stdout
    # a folder of one's own the studio may not read: refused with the way round, then sent
    mine = imagesets.squares(tmp_path / "mine", 4, start=900)
    refused = studio("import", name, str(mine), ok=False)
    assert refused.exit_code == 3 and "--upload" in refused.stderr, refused.stderr
    sent = studio.json("import", name, str(mine), "--upload")
    assert sent["state"] == "completed" and sent["source_kind"] == "upload", sent
    # split, then train two epochs following them live
    split = studio.json("split", name, "--ratios", "0.6,0.2,0.2", "--seed", "0")
    assert sum(split["totals"].values()) == 56 and split["totals"]["test"] > 0, split
    trained = studio("train", name, "--epochs", "2", *FAST, *FAST_PARAMS, "--follow")
    assert "epoch 1/2" in trained.stdout and "epoch 2/2" in trained.stdout, trained.stdout
    assert "completed" in trained.stdout
    (run,) = studio.json("runs", "list", "--project", name)
    assert run["status"] == "completed" and run["split_id"] == split["id"]
    shown_run = studio.json("runs", "show", run["id"])
    assert [e["epoch"] for e in shown_run["history"]] == [1, 2]
    # evaluate, export with a verified download, predict
    evaluation = studio.json("eval", run["id"])
    assert evaluation["status"] == "completed" and 0 <= evaluation["metrics"]["accuracy"] <= 1
    model = tmp_path / "model.onnx"
    exported = studio.json("export", run["id"], "--format", "onnx", "--download", str(model))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert exported["file"] == {"path": str(model), "sha256": digest}
    assert exported["export"]["sha256"] == digest
    images = sorted(folder.rglob("*.png"))[:2]
    predicted = studio.json("predict", exported["export"]["id"], *map(str, images), "--top-k", "1")
    assert [len(i["predictions"]) for i in predicted["images"]] == [1, 1]
    assert {i["predictions"][0]["label"] for i in predicted["images"]} <= {"tl", "br"}
    # every job of the journey is one task of the project
    tasks = studio.json("tasks", "list", "--project", name)
    kinds = sorted(t["kind"] for t in tasks)
    assert kinds == ["evaluation", "export", "import", "import", "import", "training"], tasks
    task = studio.json("tasks", "show", run["id"])
    assert task["status"] == "completed" and task["kind"] == "training"


def test_people_get_tables_and_scripts_get_one_document(
    studio: Terminal, project: dict[str, Any]
) -> None:
    listed = studio("projects", "list", "--all")
    assert project["id"] in listed.stdout and project["name"] in listed.stdout
    # --json before or after the command: stdout is exactly one JSON document
    before = json.loads(studio("--json", "projects", "list", "--all").stdout)
    after = studio.json("projects", "list", "--all")
    assert project["id"] in {p["id"] for p in before} == {p["id"] for p in after}


def test_an_unknown_project_or_run_is_named_with_a_non_zero_exit(studio: Terminal) -> None:
    done = studio("split", "no-such-project", "--json", ok=False)
    assert done.exit_code == 4
    assert "no project 'no-such-project'" in done.stderr and done.stdout == ""
    # a refusal of the studio: its message and its request id
    missing = studio("runs", "show", uuid.uuid4().hex, ok=False)
    assert missing.exit_code == 4
    assert "request id" in missing.stderr and "Traceback" not in missing.stderr


def test_bad_ratios_are_a_usage_error(studio: Terminal, project: dict[str, Any]) -> None:
    for ratios, why in (("0.5,0.5,0.5", "adds up to 1.5"), ("0.7,0.3", "three fractions")):
        done = studio("split", project["name"], "--ratios", ratios, ok=False)
        assert done.exit_code == 2, done.stderr
        assert "Usage: studio split" in done.stderr and why in done.stderr


def test_without_signing_in_a_command_says_how(tmp_path: Path, stack: Stack) -> None:
    stranger = Terminal(tmp_path)
    done = stranger("projects", "list", ok=False)
    assert done.exit_code == 3
    assert "not signed in" in done.stderr and "studio login" in done.stderr
    refused = stranger("login", "--url", stack.base_url, "--user", ADMIN, "--password-stdin",
                       input="wrong password\n", ok=False)  # fmt: skip
    assert refused.exit_code == 3 and "request id" in refused.stderr
    assert not (tmp_path / "ai-studio" / "credentials.json").exists()


def test_ctrl_c_leaves_a_followed_run_going_and_with_stop_stops_it(
    stack: Stack, studio: Terminal
) -> None:
    # given a run of many epochs, queued and running
    name = f"cli-long-{uuid.uuid4().hex[:6]}"
    studio("projects", "create", name)
    folder = imagesets.squares(stack.imports / uuid.uuid4().hex, per_class=8)
    studio("import", name, str(folder), "--json")
    studio("split", name, "--ratios", "0.5,0.5,0", "--json")
    run = studio.json("train", name, "--epochs", "200", *FAST, *FAST_PARAMS)
    # when `studio runs follow` is interrupted once its first epoch is shown
    detached = interrupted(studio, "runs", "follow", run["id"])
    # then it leaves, saying how to come back, and the run goes on
    assert detached.returncode == 130, detached.stderr
    assert (
        "keeps running" in detached.stderr and f"studio runs follow {run['id']}" in detached.stderr
    )
    assert studio.json("runs", "show", run["id"])["status"] == "running"
    # and interrupted with --stop, it stops the run, keeping its last checkpoint
    stopped = interrupted(studio, "runs", "follow", run["id"], "--stop")
    assert stopped.returncode == 130, stopped.stderr
    assert f"studio runs resume {run['id']}" in stopped.stderr
    assert studio.json("runs", "show", run["id"])["status"] == "stopped"


def interrupted(studio: Terminal, *args: str) -> subprocess.CompletedProcess[str]:
    """``studio ARGS`` in its own process, sent SIGINT (Ctrl-C) once it printed an epoch."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env["XDG_CONFIG_HOME"] = str(studio.config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()  # blocks until an epoch is printed (or the end)
        assert first.startswith("epoch "), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)

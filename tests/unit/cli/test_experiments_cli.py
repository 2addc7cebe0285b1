"""``studio experiments``: the search space from the command line, what create sends, the
follow's lines and its end (completed, stopped, Ctrl-C), list, show and promote, with a fake
client in place of the studio (the real one: tests/integration/test_client_experiments.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from services.cli import cli
from studio_client.cli import errors as exits
from studio_client.cli.commands.experiments import parse_spec
from studio_client.cli.state import State
from studio_client.models import (
    Evaluation,
    Experiment,
    Export,
    Page,
    Project,
    Promotion,
    Split,
    StreamEvent,
    Trial,
)

BIRDS = Project(id="a" * 32, name="birds", role="owner")
OBJECTIVES = [{"metric": "val_accuracy", "direction": "maximize"}]
TRIALS = [
    Trial(trial=0, state="completed", run_id="r0", params={"model": "smallcnn",
          "learning_rate": 0.001}, values={"val_accuracy": 0.5}),
    Trial(trial=1, state="pruned", run_id="r1", params={"model": "smallcnn",
          "learning_rate": 0.09}, epoch=1),
]  # fmt: skip
DONE = Experiment(id="e1", project_id=BIRDS.id, name="quick", status="completed", max_trials=2,
                  objectives=OBJECTIVES, trials=TRIALS, front=[0], best={"val_accuracy": 0},
                  importances={"learning_rate": 1.0}, trials_started=2,
                  trials_finished=2)  # fmt: skip
FEED = [
    StreamEvent(event="snapshot", data={"trials": []}),
    StreamEvent(event="trial_started", data={"trial": 0, "run_id": "r0",
                "params": {"model": "smallcnn", "learning_rate": 0.001}}, id=3),
    StreamEvent(event="epoch_end", data={"run_id": "r0", "epoch": 1, "val_accuracy": 0.5}, id=4),
    StreamEvent(event="status", data={"type": "training.run_completed.v1", "run_id": "r0",
                "trial": 0, "status": "completed"}, id=5),
    StreamEvent(event="trial_completed", data={"trial": 0, "values": {"val_accuracy": 0.5}}, id=6),
    StreamEvent(event="trial_pruned", data={"trial": 1, "epoch": 1, "value": 0.1}, id=7),
    StreamEvent(event="front_updated", data={"front": [0], "best": {"val_accuracy": 0}}, id=8),
    StreamEvent(event="complete", data={"type": "training.experiment_completed.v1",
                "reason": "max_trials"}, id=9),
]  # fmt: skip


class FakeExperiments:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.final = DONE
        self.feed = FEED
        self.interrupt = False
        self.followed = False
        self.export_status = "completed"
        self.before = Experiment(id="e1", status="running", max_trials=2, objectives=OBJECTIVES)

    def create(self, project_id: str, split_id: str, name: str, **options: Any) -> Experiment:
        self.calls.append(("create", {"project_id": project_id, "split_id": split_id,
                                      "name": name, **options}))  # fmt: skip
        return Experiment(id="e1", project_id=project_id, name=name, status="running",
                          max_trials=options["max_trials"], objectives=OBJECTIVES)  # fmt: skip

    def get(self, experiment_id: str) -> Experiment:
        return self.final if self.followed else self.before

    def follow(self, experiment_id: str) -> Iterator[StreamEvent]:
        for i, event in enumerate(self.feed):
            if self.interrupt:
                raise KeyboardInterrupt
            self.followed = i == len(self.feed) - 1  # the studio has it once the feed says so
            yield event

    def list(self, **params: Any) -> Page[Experiment]:
        self.calls.append(("list", params))
        return Page[Experiment](items=[DONE], total=1)

    def stop(self, experiment_id: str) -> Experiment:
        self.calls.append(("stop", experiment_id))
        return DONE

    def promote(self, experiment_id: str, trial: int, format: str) -> Promotion:
        self.calls.append(("promote", (experiment_id, trial, format)))
        return Promotion(experiment_id=experiment_id, trial=trial, run_id="r0",
                         evaluation_id="v1", export_id="x1")  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeExperiments:
    experiments = FakeExperiments()
    evaluation = Evaluation(id="v1", run_id="r0", status="completed", metrics={"accuracy": 0.75})
    client = SimpleNamespace(
        experiments=experiments,
        projects=SimpleNamespace(get=lambda pid: BIRDS, list=lambda **_: Page(items=[BIRDS])),
        splits=SimpleNamespace(list=lambda pid: [Split(id="s1", project_id=pid, name="s")]),
        evaluations=SimpleNamespace(wait=lambda i, timeout: evaluation),
        exports=SimpleNamespace(
            wait=lambda i, timeout: Export(id=i, run_id="r0", status=experiments.export_status),
            download=lambda i, path: Path(path) / "model.onnx",
        ),
    )  # fmt: skip
    monkeypatch.setattr(State, "client", lambda self: client)
    return experiments


def studio(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def test_a_spec_is_a_choice_a_range_a_log_range_or_a_fixed_value() -> None:
    assert parse_spec("batch_size", "16,32") == {"type": "categorical", "choices": [16, 32]}
    assert parse_spec("optimizer", "adam,sgd")["choices"] == ["adam", "sgd"]
    assert parse_spec("batch_size", "8..64") == {
        "type": "int", "low": 8, "high": 64, "step": 1, "log": False,
    }  # fmt: skip
    lr = parse_spec("learning_rate", "1e-4..1e-1:log")
    assert (lr["type"], lr["low"], lr["high"], lr["log"]) == ("float", 1e-4, 0.1, True)
    assert parse_spec("augmentation", "true") == {"type": "fixed", "value": True}
    for bad in ("a..b", "adam:log"):
        with pytest.raises(click.BadParameter):
            parse_spec("x", bad)


def test_create_sends_the_space_objectives_and_budget_and_prints_the_experiment(
    fake: FakeExperiments, tmp_path: Path
) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"weight_decay": {"type": "fixed", "value": 0.0}}))
    done = studio(
        "experiments", "create", "birds", "--name", "quick", "--family", "smallcnn",
        "--max-trials", "4", "--epochs-per-trial", "2", "--model", "smallcnn",
        "--learning-rate", "1e-4..1e-1:log", "--param", "batch_size=16,32",
        "--space", f"@{space}", "--objective", "val_accuracy", "--objective",
        "latency_ms:minimize", "--pruning", "none", "--seed", "3", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["id"] == "e1"
    name, sent = fake.calls[0]
    assert name == "create" and sent["project_id"] == BIRDS.id and sent["split_id"] == "s1"
    assert set(sent["search_config"]) == {"weight_decay", "model", "learning_rate", "batch_size"}
    assert sent["search_config"]["model"] == {"type": "categorical", "choices": ["smallcnn"]}
    assert sent["objectives"] == ["val_accuracy", "latency_ms:minimize"]
    assert (sent["architecture_type"], sent["max_trials"], sent["epochs_per_trial"]) == (
        "smallcnn", 4, 2,
    )  # fmt: skip
    assert (sent["pruning"], sent["seed"], sent["max_concurrent_trials"]) == ("none", 3, None)


def test_create_refuses_a_malformed_param_before_sending_anything(fake: FakeExperiments) -> None:
    done = studio("experiments", "create", "birds", "--param", "batch_size")
    assert done.exit_code == exits.USAGE and "KEY=SPEC" in done.stderr
    assert studio("experiments", "create", "birds", "--space", "[1]").exit_code == exits.USAGE
    assert studio("experiments", "create", "birds", "--max-trials", "501").exit_code == 2
    assert not fake.calls


def test_follow_prints_a_line_per_trial_then_the_table_front_and_best(
    fake: FakeExperiments,
) -> None:
    done = studio("experiments", "create", "birds", "--name", "quick", "--follow")
    assert done.exit_code == 0, done.output
    out = done.stdout
    assert "trial 0 running: smallcnn learning_rate=0.001" in out
    assert "trial 0 completed: val_accuracy 50.0%" in out
    assert "trial 1 pruned after epoch 1" in out
    assert "experiment completed: max_trials" in out
    assert "best val_accuracy: trial 0 (50.0%)" in out and "front: trials 0" in out
    assert any(line.split()[:3] == ["0", "*", "│"] for line in out.splitlines()), out


def test_create_follow_json_prints_only_the_final_experiment(fake: FakeExperiments) -> None:
    done = studio("experiments", "create", "birds", "--follow", "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["status"] == "completed" and doc["front"] == [0]
    assert [t["state"] for t in doc["trials"]] == ["completed", "pruned"]


def test_a_search_that_ends_stopped_fails_the_command_with_how_to_resume(
    fake: FakeExperiments,
) -> None:
    fake.final = Experiment(id="e1", status="stopped", trials=TRIALS[:1])
    fake.feed = [StreamEvent(event="status", data={"type": "training.experiment_stopped.v1"})]
    done = studio("experiments", "follow", "e1")
    assert done.exit_code == exits.FAILED
    assert "studio experiments resume e1 --follow" in done.stderr


@pytest.mark.parametrize("stop", [False, True])
def test_ctrl_c_detaches_or_with_stop_stops_the_search(fake: FakeExperiments, stop: bool) -> None:
    fake.interrupt = True
    done = studio("experiments", "follow", "e1", *(["--stop"] if stop else []))
    assert done.exit_code == exits.INTERRUPTED
    assert (("stop", "e1") in fake.calls) is stop
    assert ("resume e1" if stop else "studio experiments follow e1") in done.stderr


def test_list_and_show_draw_tables_and_documents(fake: FakeExperiments) -> None:
    listed = studio("experiments", "list", "--project", "birds", "--limit", "5")
    assert listed.exit_code == 0 and "e1" in listed.stdout and "2/2" in listed.stdout
    assert ("list", {"project_id": BIRDS.id, "status": None, "limit": 5}) in fake.calls
    fake.before = DONE
    shown = studio("experiments", "show", "e1")
    assert (
        "learning_rate=0.09" in shown.stdout and "importances: learning_rate 1.00" in shown.stdout
    )
    assert json.loads(studio("experiments", "show", "e1", "--json").stdout)["best"] == {
        "val_accuracy": 0
    }


def test_promote_waits_for_the_evaluation_and_the_export(fake: FakeExperiments) -> None:
    done = studio("experiments", "promote", "e1", "0", "--wait")
    assert done.exit_code == 0, done.output
    assert "test accuracy 75.0%; export completed" in done.stdout
    assert ("promote", ("e1", 0, "onnx")) in fake.calls
    doc = json.loads(studio("experiments", "promote", "e1", "0", "--json").stdout)
    assert doc["export_id"] == "x1" and doc["evaluation_id"] == "v1"


def test_the_view_takes_a_snapshots_trials_and_front_and_finds_an_epochs_trial_by_run() -> None:
    from studio_client.cli.experiment_view import ExperimentView
    from studio_client.cli.output import Output

    view = ExperimentView(Experiment(id="e1", objectives=OBJECTIVES), Output())
    trials = [{"trial": 0, "run_id": "r0", "state": "running", "params": {"model": "smallcnn"}}]
    snapshot = {"trials": trials, "experiment": {"front": [0], "best": {"val_accuracy": 0}}}
    assert not view.see(StreamEvent(event="snapshot", data=snapshot))
    epoch = {"run_id": "r0", "trial": None, "epoch": 2, "val_accuracy": 0.8, "val_loss": 0.3}
    assert not view.see(StreamEvent(event="epoch_end", data=epoch, id=4))
    row = view.experiment.trial(0)
    assert row is not None and row.epoch == 2 and row.metrics["val_accuracy"] == 0.8
    assert view.experiment.front == [0] and view.experiment.best == {"val_accuracy": 0}
    done = {"type": "training.experiment_completed.v1", "reason": "max_trials"}
    assert view.see(StreamEvent(event="complete", data=done, id=9))


def test_the_table_leaves_out_what_every_trial_takes_alike() -> None:
    from rich.console import Console

    from studio_client.cli.experiment_view import trials_table

    params = {"model": "smallcnn", "learning_rate": 0.002, "image_size": 32}
    space = {"image_size": {"type": "fixed", "value": 32}, "learning_rate": {"type": "float"}}
    shown = Experiment(id="e1", search_config=space, trials=[Trial(trial=0, params=params)])
    console = Console(width=200, record=True)
    console.print(trials_table(shown))
    text = console.export_text()
    assert "learning_rate=0.002" in text and "image_size" not in text


def test_promote_downloads_the_export_and_fails_when_the_export_did(
    fake: FakeExperiments, tmp_path: Path
) -> None:
    done = studio("experiments", "promote", "e1", "0", "--download", str(tmp_path), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["saved"] == str(tmp_path / "model.onnx")
    fake.export_status = "failed"
    failed = studio("experiments", "promote", "e1", "0", "--download", str(tmp_path))
    assert failed.exit_code == exits.FAILED and "export failed" in failed.stderr

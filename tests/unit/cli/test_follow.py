"""Following a run: the epochs table, how a feed ends, and Ctrl-C (leave it, or --stop it),
with a fake client in place of the studio."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from studio_client.cli import errors as exits
from studio_client.cli.commands.training import finish, watch
from studio_client.cli.errors import Failure
from studio_client.cli.live import RunView, import_bar, transfer
from studio_client.cli.output import Output
from studio_client.cli.state import State
from studio_client.models import Epoch, Run, StreamEvent


def run(status: str = "running", **fields: Any) -> Run:
    return Run(id="r1", project_id="p", split_id="s", status=status, epochs=2, **fields)


def epoch(n: int, acc: float) -> StreamEvent:
    data = {"epoch": n, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": acc, "seconds": 1.0}
    return StreamEvent(event="epoch_end", data=data, id=n)


FEED = [
    StreamEvent(event="status", data={"status": "running"}, id=1),
    StreamEvent(event="progress", data={"epoch": 1, "epochs": 2, "batch": 3, "batches": 6}),
    epoch(1, 0.5),
    epoch(2, 0.75),
    StreamEvent(event="complete", data={"best_epoch": 2}, id=9),
]


class FakeRuns:
    def __init__(self, feed: list[StreamEvent], interrupt_after: int | None = None) -> None:
        self.feed, self.interrupt_after = feed, interrupt_after
        self.stopped: list[str] = []
        self.closed = False
        self.final = run("completed", epochs_done=2, best_epoch=2, best_val_accuracy=0.75)

    def follow(self, run_id: str) -> Iterator[StreamEvent]:
        try:
            for i, event in enumerate(self.feed):
                if i == self.interrupt_after:
                    raise KeyboardInterrupt
                yield event
        finally:
            self.closed = True

    def get(self, run_id: str) -> Run:
        return self.final

    def stop(self, run_id: str) -> Run:
        self.stopped.append(run_id)
        self.final = run("stopped", epochs_done=1)
        return run("stopping")

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        return self.final


class FakeState(State):
    def __init__(self, runs: FakeRuns, json: bool = False) -> None:
        super().__init__("http://studio")
        self.output = Output(json=json)
        self.runs = runs

    def client(self) -> Any:
        return self


def test_the_view_keeps_each_epoch_once_and_ends_at_complete() -> None:
    view = RunView(run(), Output())
    ended = [view.see(e) for e in [*FEED[:4], epoch(2, 0.75), FEED[4]]]
    assert ended == [False, False, False, False, False, True]
    assert [r["epoch"] for r in view.rows] == [1, 2] and view.status == "completed"
    assert view.bar.tasks[0].total == 6


@pytest.mark.parametrize("status", ["stopped", "interrupted", "failed"])
def test_a_feed_ends_when_the_run_stops_or_vanishes(status: str) -> None:
    view = RunView(run(), Output())
    assert view.see(StreamEvent(event="status", data={"status": status}, id=3))


def test_following_prints_one_line_per_epoch_where_no_terminal_watches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = FakeRuns(FEED)
    done = watch(FakeState(runs), run())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert done.status == "completed" and runs.closed


def test_json_following_prints_nothing_until_its_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    watch(FakeState(FakeRuns(FEED), json=True), run())
    assert capsys.readouterr().out == ""


def test_ctrl_c_detaches_and_says_how_to_come_back() -> None:
    runs = FakeRuns(FEED, interrupt_after=3)
    with pytest.raises(Failure) as caught:
        watch(FakeState(runs), run())
    assert caught.value.exit_code == exits.INTERRUPTED
    assert "keeps running" in caught.value.message
    assert caught.value.hint == "Re-attach: studio runs follow r1"
    assert runs.stopped == [] and runs.closed


def test_ctrl_c_with_stop_stops_the_run() -> None:
    runs = FakeRuns(FEED, interrupt_after=3)
    with pytest.raises(Failure) as caught:
        watch(FakeState(runs), run(), stop=True)
    assert runs.stopped == ["r1"]
    assert caught.value.exit_code == exits.INTERRUPTED
    assert "stopped after epoch 1" in caught.value.message
    assert "studio runs resume r1" in (caught.value.hint or "")


def test_a_run_already_over_is_not_followed() -> None:
    runs = FakeRuns([])
    runs.feed = None  # type: ignore[assignment]  # following it would fail
    assert watch(FakeState(runs), run("stopped")).status == "completed"


@pytest.mark.parametrize(
    ("status", "message"),
    [("failed", "failed: out of memory"), ("stopped", "stopped after epoch 1")],
)
def test_a_run_that_did_not_complete_fails_the_command(
    status: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = run(status, epochs_done=1, message="out of memory" if status == "failed" else None)
    with pytest.raises(Failure, match=message) as caught:
        finish(FakeState(FakeRuns([])), ended)
    assert caught.value.exit_code == exits.FAILED
    assert f"Run r1: {status}" in capsys.readouterr().out


def test_a_completed_run_prints_its_history_and_best_epoch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    history = [
        Epoch(epoch=1, train_loss=0.6, val_loss=0.5, val_accuracy=0.5),
        Epoch(epoch=2, train_loss=0.3, val_loss=0.2, val_accuracy=0.9),
    ]
    done = run("completed", epochs_done=2, best_epoch=2, best_val_accuracy=0.9, history=history)
    finish(FakeState(FakeRuns([])), done)
    out = capsys.readouterr().out
    assert "90.0% *" in out and "best epoch 2, val accuracy 90.0%" in out


def terminal_output() -> tuple[Output, io.StringIO]:
    """An Output whose stdout is a (forced) terminal, drawn into a buffer."""
    output, screen = Output(), io.StringIO()
    output.out = Console(file=screen, force_terminal=True, width=100, color_system=None)
    return output, screen


def test_on_a_terminal_the_epochs_are_a_live_table_above_a_batch_bar() -> None:
    # given a person watching on a terminal
    output, screen = terminal_output()
    state = FakeState(FakeRuns(FEED))
    state.output = output
    # when the run is followed to its end
    done = watch(state, run())
    # then the table of both epochs was drawn (best marked) with the batch bar under it
    drawn = screen.getvalue()
    assert done.status == "completed"
    assert "val accuracy" in drawn and "75.0% *" in drawn and "2/2" in drawn
    assert "epoch 1/2 batches" in drawn


def test_on_a_terminal_imports_and_transfers_draw_bars() -> None:
    output, screen = terminal_output()
    bar, see = import_bar(output)
    with bar:
        see(StreamEvent(event="status", data={"state": "running"}))
        see(
            StreamEvent(
                event="progress", data={"phase": "decoding", "done": 5, "total": 10, "rate": 2.5}
            )
        )
    with transfer(output, "upload birds.zip") as progress:
        progress(0, 2048)
        progress(2048, 2048)
    drawn = screen.getvalue()
    assert "decoding" in drawn and "5/10" in drawn and "2.5 files/s" in drawn
    assert "upload birds.zip" in drawn and "2.0/2.0 kB" in drawn

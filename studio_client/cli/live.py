"""Live displays of the ``studio`` command: transfer bars, the import's bar, and the live
table of a run's epochs with its batch bar.

Each draws only on a terminal (``Output.live``); elsewhere a run's epochs are printed one line
each as they end (people reading CI logs), and ``--json`` prints nothing until its one
document. The client's progress callbacks come from its own thread: rich's Progress takes its
own lock. Imports rich and the client's models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from studio_client.cli.output import Output, number, percent, table
from studio_client.models import Run, StreamEvent

__all__ = ["RunView", "import_bar", "transfer"]

#: How a run's feed may end, by the status its last event gives.
ENDED = ("completed", "failed", "stopped", "interrupted")


@contextmanager
def transfer(output: Output, description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A bytes bar (size, speed, time left); yields the ``progress(done, total)`` callback."""
    console = output.live
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(quiet=True),
        disable=console is None,
    )
    task = bar.add_task(description, total=None)

    def report(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield report


def import_bar(output: Output) -> tuple[Progress, Callable[[StreamEvent], None]]:
    """The import's bar (files, files/s, time left) and what feeds it an event of the feed."""
    console = output.live
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console or Console(quiet=True),
        disable=console is None,
    )
    task = bar.add_task("starting", total=None, rate="")

    def see(event: StreamEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.event == "progress":
            rate = data.get("rate") or 0.0
            bar.update(
                task,
                description=str(data.get("phase", "importing")),
                total=data.get("total") or None,
                completed=data.get("done") or 0,
                rate=f"{rate:.1f} files/s" if rate else "",
            )
        elif event.event == "status":
            bar.update(task, description=str(data.get("state", "running")))

    return bar, see


class RunView:
    """A run's epochs so far, as a table, above a bar of the current epoch's batches."""

    def __init__(self, run: Run, output: Output) -> None:
        self.run_id, self.output = run.id, output
        self.epochs_total = run.epochs or int(run.hyperparameters.get("epochs", 0)) or None
        self.status = run.status
        self.rows: list[dict[str, Any]] = []
        self.message: str | None = None
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeRemainingColumn(),
            console=output.live or Console(quiet=True),
        )
        self.batches = self.bar.add_task(f"run {run.status}", total=None, loss="")

    def __rich__(self) -> Group:
        return Group(self.table(), self.bar)

    def table(self) -> Table:
        best = max((r["val_accuracy"] for r in self.rows), default=None)
        rows = [
            (
                f"{r['epoch']}/{self.epochs_total or '?'}",
                number(r["train_loss"]),
                number(r["val_loss"]),
                percent(r["val_accuracy"]) + (" *" if r["val_accuracy"] == best else "  "),
                f"{r.get('seconds', 0):.1f}",
                f"{r.get('images_per_second', 0):.0f}",
            )
            for r in self.rows
        ]
        columns = ("epoch", "train loss", "val loss", "val accuracy", "seconds", "images/s")
        title = f"run {self.run_id} · {self.status}"
        return table(columns, rows, title=title, numeric=columns)

    def see(self, event: StreamEvent) -> bool:
        """Take in one event of the run's feed; True once the run has ended."""
        data = event.data if isinstance(event.data, dict) else {}
        if event.event == "progress":
            epoch, epochs = data.get("epoch"), data.get("epochs") or self.epochs_total
            self.bar.update(
                self.batches,
                description=f"epoch {epoch}/{epochs} batches",
                total=data.get("batches"),
                completed=data.get("batch", 0),
                loss=f"loss {data.get('running_loss', 0):.4f}",
            )
        elif event.event == "epoch_end":
            self._epoch(data)
        elif event.event in ("complete", "error"):
            self.status = "completed" if event.event == "complete" else "failed"
            self.message = data.get("message")
            return True
        elif "status" in data:
            self.status = str(data["status"])
            self.bar.update(self.batches, description=f"run {self.status}")
            return self.status in ENDED
        return False

    def _epoch(self, data: dict[str, Any]) -> None:
        if any(r["epoch"] == data.get("epoch") for r in self.rows):
            return  # a resumed run's feed may give an epoch again: shown once
        self.rows.append(data)
        self.bar.update(self.batches, completed=self.bar.tasks[0].total)
        if self.output.live is None and not self.output.json:
            self.output.out.print(self._line(data), highlight=False)

    def _line(self, r: dict[str, Any]) -> str:
        return (
            f"epoch {r['epoch']}/{self.epochs_total or '?'}  "
            f"train loss {number(r['train_loss'])}  val loss {number(r['val_loss'])}  "
            f"val accuracy {percent(r['val_accuracy'])}  {r.get('seconds', 0):.1f} s"
        )

"""``studio train`` and ``studio runs list|show|follow|stop|resume|compare``.

Following a run draws a live table of its epochs above a bar of the current epoch's batches.
Ctrl-C leaves the run going (``studio runs follow RUN`` comes back to it); with ``--stop`` it
stops the run instead, keeping its last checkpoint.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from studio_client.cli.errors import FAILED, INTERRUPTED, Failure
from studio_client.cli.live import ENDED, RunView
from studio_client.cli.options import json_option
from studio_client.cli.output import number, percent, table, when
from studio_client.cli.state import State, pass_state
from studio_client.models import Run

__all__ = ["finish", "follow_to_end", "runs", "train", "watch"]

FOLLOW_HELP = "Watch it live until it ends (Ctrl-C leaves it running)."
STOP_HELP = "With --follow: Ctrl-C stops the run (its last checkpoint kept) instead of leaving it."


def _param(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that reads as JSON (a number, true) is taken as such."""
    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def watch(state: State, run: Run, *, stop: bool = False) -> Run:
    """Follow ``run`` to its end (or Ctrl-C); returns it as it is then, history included."""
    client = state.client()
    if run.status in ENDED:
        return client.runs.get(run.id)
    view = RunView(run, state.output)
    console = state.output.live
    live: AbstractContextManager[Any] = (
        Live(view, console=console, refresh_per_second=4) if console else nullcontext()
    )
    events = client.runs.follow(run.id)
    try:
        with live:
            for event in events:
                if view.see(event):
                    break
    except KeyboardInterrupt:
        _interrupted(state, run.id, stop)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return client.runs.get(run.id)


def _interrupted(state: State, run_id: str, stop: bool) -> None:
    if not stop:
        raise Failure(
            f"detached from run {run_id}: it keeps running in the studio",
            INTERRUPTED,
            hint=f"Re-attach: studio runs follow {run_id}",
        )
    client = state.client()
    client.runs.stop(run_id)
    state.output.note(f"Stopping run {run_id} at its next batch ...")
    stopped = client.runs.wait(run_id, timeout=120)
    raise Failure(
        f"run {run_id} {stopped.status} after epoch {stopped.epochs_done}",
        INTERRUPTED,
        hint=f"Resume it: studio runs resume {run_id} --follow",
    )


def follow_to_end(state: State, run: Run, *, stop: bool) -> None:
    """``watch`` then ``finish``; the epochs table once, where a live one was not drawn."""
    drawn = state.output.live is not None and run.status not in ENDED
    finish(state, watch(state, run, stop=stop), history=not drawn)


def finish(state: State, run: Run, *, history: bool = True) -> None:
    """Print ``run`` as it ended; a run that did not complete fails the command."""
    state.output.result(run, lambda out: _summary(out, run, history=history))
    if run.status == "completed":
        return
    resume = f"Resume it: studio runs resume {run.id} --follow"
    if run.status == "failed":
        raise Failure(f"run {run.id} failed: {run.message or 'no reason given'}", FAILED)
    if run.status in ("stopped", "interrupted"):
        reason = f": {run.message}" if run.message else ""
        raise Failure(
            f"run {run.id} {run.status} after epoch {run.epochs_done}{reason}", FAILED, hint=resume
        )


def _summary(out: Console, run: Run, *, history: bool = True) -> None:
    if run.history and history:
        out.print(_history(run))
    best = (
        f"best epoch {run.best_epoch}, val accuracy {percent(run.best_val_accuracy)}"
        if run.best_epoch is not None
        else "no epoch yet"
    )
    out.print(f"Run {run.id}: [bold]{run.status}[/bold], {run.epochs_done} epochs, {best}.")


def _history(run: Run) -> Any:
    rows = [
        (
            e.epoch,
            number(e.train_loss),
            number(e.val_loss),
            percent(e.val_accuracy) + (" *" if e.epoch == run.best_epoch else "  "),
            f"{e.seconds or 0:.1f}",
        )
        for e in run.history
    ]
    columns = ("epoch", "train loss", "val loss", "val accuracy", "seconds")
    return table(columns, rows, numeric=columns)


@click.command(
    epilog="""\b
Examples:
  studio train birds --model resnet18 --epochs 10 --follow
  studio train birds --split quick --epochs 2 --param image_size=32 --follow --stop
  studio train birds --model resnet50 --devices 4   # one run on 4 devices of a trainer
  studio train birds --json                    # queue it; prints the run
"""
)
@click.argument("project")
@click.option("--split", "split_ref", metavar="SPLIT", help="Split id or name (the newest).")
@click.option("--model", help="Model of the zoo (smallcnn, resnet18, ...).")
@click.option("--epochs", type=click.IntRange(1, 1000))
@click.option("--batch-size", type=click.IntRange(1, 4096))
@click.option("--learning-rate", type=click.FloatRange(0, 10, min_open=True))
@click.option("--image-size", type=click.IntRange(16, 1024))
@click.option("--seed", type=click.IntRange(0))
@click.option(
    "--devices", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Devices of one trainer to train on at once (the batch is split between them).",
)  # fmt: skip
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Any other.")
@click.option("--follow", is_flag=True, help=FOLLOW_HELP)
@click.option("--stop", is_flag=True, help=STOP_HELP)
@json_option
@pass_state
def train(state: State, project: str, split_ref: str | None, **options: Any) -> None:
    """Queue a training run of PROJECT on a split; it starts when a device is free.

    Hyperparameters left out take the studio's defaults.
    """
    follow, stop, devices = options.pop("follow"), options.pop("stop"), options.pop("devices")
    hyper = {k: v for k, v in options.items() if k != "params" and v is not None}
    hyper |= _param(options["params"])
    target = state.project(project)
    chosen = state.split(target, split_ref)
    run = state.client().runs.create(target.id, chosen.id, hyper, devices=devices)
    if not follow:
        state.output.result(run, lambda out: _queued(out, run))
        return
    state.output.note(f"Run {run.id} queued on split {chosen.name!r}.")
    follow_to_end(state, run, stop=stop)


def _queued(out: Console, run: Run) -> None:
    where = f" (place {run.position} in the queue)" if run.position else ""
    out.print(f"Run {run.id} {run.status}{where}.")
    out.print(f"Watch it: studio runs follow {run.id}")


@click.group(
    epilog="""\b
Examples:
  studio runs list --project birds
  studio runs show RUN
  studio runs compare RUN1 RUN2
"""
)
def runs() -> None:
    """Training runs: list, show, follow, stop, resume and compare them."""


@runs.command("list", epilog="\b\nExample:\n  studio runs list --project birds --status running\n")
@click.option("--project", metavar="PROJECT", help="Only this project's (id or name).")
@click.option("--status", help="Only runs in this status (queued, running, completed ...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@json_option
@pass_state
def list_(state: State, project: str | None, status: str | None, limit: int) -> None:
    """Runs, newest first."""
    project_id = state.project(project).id if project else None
    found = state.client().runs.list(project_id=project_id, status=status, limit=limit)

    def human(out: Console) -> None:
        if not found:
            out.print("No runs.")
            return
        columns = ("id", "status", "model", "epochs", "best val accuracy", "created")
        rows = [
            (
                r.id,
                r.status,
                r.hyperparameters.get("model"),
                f"{r.epochs_done}/{r.epochs or r.hyperparameters.get('epochs', '?')}",
                percent(r.best_val_accuracy),
                when(r.created_at),
            )
            for r in found
        ]
        out.print(table(columns, rows))

    state.output.result(found, human)


@runs.command(epilog="\b\nExample:\n  studio runs show RUN --json\n")
@click.argument("run_id", metavar="RUN")
@json_option
@pass_state
def show(state: State, run_id: str) -> None:
    """One run: its hyperparameters, its epochs and its checkpoints."""
    run = state.client().runs.get(run_id)

    def human(out: Console) -> None:
        _summary(out, run)
        params = ", ".join(f"{k}={v}" for k, v in sorted(run.hyperparameters.items()))
        out.print(f"hyperparameters: {params}", highlight=False)
        for c in run.checkpoints:
            out.print(f"checkpoint {c.kind}: epoch {c.epoch}, sha256 {c.sha256}", highlight=False)

    state.output.result(run, human)


@runs.command(epilog="\b\nExample:\n  studio runs follow RUN --stop\n")
@click.argument("run_id", metavar="RUN")
@click.option("--stop", is_flag=True, help="Ctrl-C stops the run instead of leaving it.")
@json_option
@pass_state
def follow(state: State, run_id: str, stop: bool) -> None:
    """Watch a run live until it ends (Ctrl-C leaves it running)."""
    follow_to_end(state, state.client().runs.get(run_id), stop=stop)


@runs.command(epilog="\b\nExample:\n  studio runs stop RUN\n")
@click.argument("run_id", metavar="RUN")
@json_option
@pass_state
def stop(state: State, run_id: str) -> None:
    """Stop a run at its next batch; its last checkpoint is kept for a resume."""
    run = state.client().runs.stop(run_id)
    state.output.result(run, lambda out: out.print(f"Run {run.id}: {run.status}."))


@runs.command(epilog="\b\nExample:\n  studio runs resume RUN --epochs 20 --follow\n")
@click.argument("run_id", metavar="RUN")
@click.option("--epochs", type=click.IntRange(1, 1000), help="Raise its number of epochs.")
@click.option("--follow", "follow_", is_flag=True, help=FOLLOW_HELP)
@click.option("--stop", "stop_", is_flag=True, help=STOP_HELP)
@json_option
@pass_state
def resume(state: State, run_id: str, epochs: int | None, follow_: bool, stop_: bool) -> None:
    """Queue a stopped or interrupted run again, after its last checkpoint."""
    run = state.client().runs.resume(run_id, epochs=epochs)
    if not follow_:
        state.output.result(run, lambda out: _queued(out, run))
        return
    follow_to_end(state, run, stop=stop_)


@runs.command(epilog="\b\nExample:\n  studio runs compare RUN1 RUN2 RUN3\n")
@click.argument("run_ids", metavar="RUN...", nargs=-1, required=True)
@json_option
@pass_state
def compare(state: State, run_ids: tuple[str, ...]) -> None:
    """Two or more runs side by side: results and the hyperparameters that differ."""
    if len(run_ids) < 2:
        raise click.UsageError("compare needs at least two runs")
    found = state.client().runs.compare(list(run_ids))

    def human(out: Console) -> None:
        keys = sorted({k for r in found for k in r.hyperparameters})
        differ = [k for k in keys if len({repr(r.hyperparameters.get(k)) for r in found}) > 1]
        columns = ("id", "status", "epochs", "best epoch", "best val accuracy", *differ)
        rows = [
            (
                r.id,
                r.status,
                r.epochs_done,
                r.best_epoch,
                percent(r.best_val_accuracy),
                *(r.hyperparameters.get(k) for k in differ),
            )
            for r in found
        ]
        out.print(table(columns, rows))

    state.output.result(found, human)

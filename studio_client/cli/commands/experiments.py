"""``studio experiments create|list|show|follow|stop|resume|promote``: searches over models
and hyperparameters, each trial a queued run.

The search space comes from ``--model`` (the models to choose from), ``--learning-rate`` and
``--param KEY=SPEC`` (``a,b,c`` a choice, ``LOW..HIGH`` a range, ``LOW..HIGH:log`` a log
range, one value fixed), over ``--space`` (the whole space as JSON, or ``@file.json``).
Following a search draws a live table of its trials with the front marked; Ctrl-C leaves it
going (``studio experiments follow EXP`` comes back), or with ``--stop`` stops it.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from studio_client.cli.errors import FAILED, INTERRUPTED, Failure
from studio_client.cli.experiment_view import ExperimentView, metric, trials_table
from studio_client.cli.options import json_option
from studio_client.cli.output import table, when
from studio_client.cli.state import State, pass_state
from studio_client.experiments import choice, fixed, float_range, int_range
from studio_client.models import Experiment

__all__ = ["experiments", "parse_spec"]

FAMILIES = ("any", "smallcnn", "resnet", "mobilenet", "efficientnet", "convnext")
PRUNING = ("median", "successive_halving", "none")
FOLLOW_HELP = "Watch it live until it ends (Ctrl-C leaves it running)."
STOP_HELP = "With --follow: Ctrl-C stops the search instead of leaving it."


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_spec(key: str, spec: str) -> dict[str, Any]:
    """One parameter of the space: ``a,b`` a choice, ``LOW..HIGH[:log]`` a range (of ints
    when both ends are), anything else a fixed value."""
    body, log = (spec[:-4], True) if spec.endswith(":log") else (spec, False)
    if ".." in body:
        low, _, high = (_value(p.strip()) for p in body.partition(".."))
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise click.BadParameter(f"{key}: {spec!r} is not LOW..HIGH", param_hint="--param")
        if isinstance(low, int) and isinstance(high, int):
            return int_range(low, high, log=log)
        return float_range(float(low), float(high), log=log)
    if log:
        raise click.BadParameter(f"{key}: ':log' goes with a range LOW..HIGH")
    if "," in spec:
        return choice(*(_value(p.strip()) for p in spec.split(",") if p.strip()))
    return fixed(_value(spec))


def _space(
    space: str | None, models: tuple[str, ...], lr: str | None, params: tuple[str, ...]
) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if space:
        text = Path(space[1:]).read_text() if space.startswith("@") else space
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--space") from None
        if not isinstance(config, dict):
            raise click.BadParameter("a JSON object of parameters", param_hint="--space")
    if models:
        config["model"] = choice(*models)
    if lr:
        config["learning_rate"] = parse_spec("learning_rate", lr)
    for item in params:
        key, sep, spec = item.partition("=")
        if not sep or not key or not spec:
            raise click.BadParameter(f"{item!r} is not KEY=SPEC", param_hint="--param")
        config[key] = parse_spec(key, spec)
    return config


# --- following ----------------------------------------------------------------------------


def watch(state: State, experiment: Experiment, *, stop: bool = False) -> Experiment:
    """Follow a search to its end (or Ctrl-C); returns it as it is then."""
    client = state.client()
    view = ExperimentView(client.experiments.get(experiment.id), state.output)
    if view.experiment.done:
        return view.experiment
    console = state.output.live
    live: AbstractContextManager[Any] = (
        Live(view, console=console, refresh_per_second=4) if console else nullcontext()
    )
    events = client.experiments.follow(experiment.id)
    try:
        with live:
            for event in events:
                if view.see(event):
                    break
    except KeyboardInterrupt:
        _interrupted(state, experiment.id, stop)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return client.experiments.get(experiment.id)


def _interrupted(state: State, experiment_id: str, stop: bool) -> None:
    hint = f"Re-attach: studio experiments follow {experiment_id}"
    if not stop:
        raise Failure(
            f"detached from experiment {experiment_id}: it keeps searching in the studio",
            INTERRUPTED,
            hint=hint,
        )
    state.client().experiments.stop(experiment_id)
    raise Failure(
        f"experiment {experiment_id} stopped: its running trials stop, queued ones are dropped",
        INTERRUPTED,
        hint=f"Resume it: studio experiments resume {experiment_id} --follow",
    )


def finish(state: State, experiment: Experiment, *, trials: bool = True) -> None:
    """Print the search as it ended; one that did not complete fails the command."""
    state.output.result(experiment, lambda out: _summary(out, experiment, trials=trials))
    if experiment.status == "stopped":
        raise Failure(
            f"experiment {experiment.id} stopped after {len(experiment.trials)} trials",
            FAILED,
            hint=f"Resume it: studio experiments resume {experiment.id} --follow",
        )
    if experiment.status == "failed":
        raise Failure(f"experiment {experiment.id} failed: {experiment.reason or ''}", FAILED)


def _follow_to_end(state: State, experiment: Experiment, *, stop: bool) -> None:
    drawn = state.output.live is not None
    finish(state, watch(state, experiment, stop=stop), trials=not drawn)


def _summary(out: Console, e: Experiment, *, trials: bool = True) -> None:
    if trials and e.trials:
        out.print(trials_table(e))
    out.print(
        f"Experiment {e.id} ({e.name}): [bold]{e.status}[/bold], "
        f"{len(e.trials)}/{e.max_trials or '?'} trials."
    )
    for name, number in e.best.items():
        found = e.trial(number)
        value = ({**found.metrics, **found.values}.get(name) if found else None) or None
        out.print(f"best {name}: trial {number} ({metric(name, value)})", highlight=False)
    if e.front:
        out.print(f"front: trials {', '.join(map(str, e.front))}", highlight=False)
    if e.importances:
        ranked = sorted(e.importances.items(), key=lambda kv: -kv[1])
        out.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in ranked))


# --- the commands -------------------------------------------------------------------------


@click.group(
    epilog="""\b
Examples:
  studio experiments create birds --name lr-search --family smallcnn --max-trials 8 --follow
  studio experiments list --project birds
  studio experiments show EXP
  studio experiments promote EXP 3 --download model.onnx
"""
)
def experiments() -> None:
    """Searches over models and hyperparameters: create, list, show, follow, stop, resume,
    promote."""


@experiments.command(
    epilog="""\b
Examples:
  studio experiments create birds --name quick --family smallcnn --max-trials 4 \\
      --epochs-per-trial 2 --learning-rate 1e-4..1e-1:log --follow
  studio experiments create birds --name trade-off --model smallcnn --model resnet18 \\
      --objective val_accuracy --objective latency_ms:minimize --param batch_size=16,32
  studio experiments create birds --name from-file --space @space.json --json
"""
)
@click.argument("project")
@click.option("--name", default="search", show_default=True)
@click.option("--split", "split_ref", metavar="SPLIT", help="Split id or name (the newest).")
@click.option("--family", type=click.Choice(FAMILIES), default="any", show_default=True)
@click.option("--max-trials", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--epochs-per-trial", type=click.IntRange(1, 1000))
@click.option("--concurrent", type=click.IntRange(1, 16), help="Trials at once (devices free).")
@click.option("--wall-time", type=click.FloatRange(1), help="Seconds; no trial starts after.")
@click.option(
    "--objective",
    "objectives",
    multiple=True,
    metavar="METRIC[:DIRECTION]",
    help="val_accuracy, val_loss, latency_ms, params, macro_f1 (classifiers), val_map "
    "(detectors); repeat for several.",
)
@click.option("--model", "models", multiple=True, help="A model to choose from; repeat.")
@click.option("--learning-rate", metavar="SPEC", help="LOW..HIGH[:log], a,b,c or one value.")
@click.option("--param", "params", multiple=True, metavar="KEY=SPEC", help="Any other.")
@click.option("--space", metavar="JSON|@FILE", help="The whole search space as JSON.")
@click.option("--pruning", type=click.Choice(PRUNING), help="Stop bad trials early.")
@click.option("--seed", type=click.IntRange(0))
@click.option("--follow", is_flag=True, help=FOLLOW_HELP)
@click.option("--stop", is_flag=True, help=STOP_HELP)
@json_option
@pass_state
def create(state: State, project: str, split_ref: str | None, **o: Any) -> None:
    """Start a search on PROJECT's split; each trial is a run queued behind the device."""
    space = _space(o["space"], o["models"], o["learning_rate"], o["params"])
    target = state.project(project)
    chosen = state.split(target, split_ref)
    experiment = state.client().experiments.create(
        target.id,
        chosen.id,
        o["name"],
        architecture_type=o["family"],
        search_config=space,
        max_trials=o["max_trials"],
        objectives=list(o["objectives"]) or None,
        epochs_per_trial=o["epochs_per_trial"],
        max_concurrent_trials=o["concurrent"],
        wall_time_s=o["wall_time"],
        pruning=o["pruning"],
        seed=o["seed"],
    )
    if not o["follow"]:
        state.output.result(experiment, lambda out: _started(out, experiment))
        return
    state.output.note(f"Experiment {experiment.id} started on split {chosen.name!r}.")
    _follow_to_end(state, experiment, stop=o["stop"])


def _started(out: Console, e: Experiment) -> None:
    out.print(f"Experiment {e.id} started ({e.max_trials or '?'} trials).")
    out.print(f"Watch it: studio experiments follow {e.id}")


@experiments.command("list", epilog="\b\nExample:\n  studio experiments list --project birds\n")
@click.option("--project", metavar="PROJECT", help="Only this project's (id or name).")
@click.option("--status", help="Only these (running, stopped, completed ...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@json_option
@pass_state
def list_(state: State, project: str | None, status: str | None, limit: int) -> None:
    """Experiments, newest first."""
    project_id = state.project(project).id if project else None
    page = state.client().experiments.list(project_id=project_id, status=status, limit=limit)

    def human(out: Console) -> None:
        if not page.items:
            out.print("No experiments.")
            return
        columns = ("id", "name", "status", "family", "trials done", "front", "created")
        rows = [
            (e.id, e.name, e.status, e.architecture_type,
             f"{e.trials_finished}/{e.max_trials or '?'}", ",".join(map(str, e.front)),
             when(e.created_at))
            for e in page.items
        ]  # fmt: skip
        out.print(table(columns, rows))

    state.output.result(page.items, human)


@experiments.command(epilog="\b\nExample:\n  studio experiments show EXP --json\n")
@click.argument("experiment_id", metavar="EXP")
@json_option
@pass_state
def show(state: State, experiment_id: str) -> None:
    """One search: its trials (front marked *), the best per objective, the importances."""
    found = state.client().experiments.get(experiment_id)
    state.output.result(found, lambda out: _summary(out, found))


@experiments.command(epilog="\b\nExample:\n  studio experiments follow EXP --stop\n")
@click.argument("experiment_id", metavar="EXP")
@click.option("--stop", is_flag=True, help="Ctrl-C stops the search instead of leaving it.")
@json_option
@pass_state
def follow(state: State, experiment_id: str, stop: bool) -> None:
    """Watch a search live until it ends (Ctrl-C leaves it running)."""
    _follow_to_end(state, state.client().experiments.get(experiment_id), stop=stop)


@experiments.command(epilog="\b\nExample:\n  studio experiments stop EXP\n")
@click.argument("experiment_id", metavar="EXP")
@json_option
@pass_state
def stop(state: State, experiment_id: str) -> None:
    """Stop a search: running trials stop, queued ones are dropped; resume continues it."""
    found = state.client().experiments.stop(experiment_id)
    state.output.result(found, lambda out: out.print(f"Experiment {found.id}: {found.status}."))


@experiments.command(epilog="\b\nExample:\n  studio experiments resume EXP --follow\n")
@click.argument("experiment_id", metavar="EXP")
@click.option("--follow", "follow_", is_flag=True, help=FOLLOW_HELP)
@click.option("--stop", "stop_", is_flag=True, help=STOP_HELP)
@json_option
@pass_state
def resume(state: State, experiment_id: str, follow_: bool, stop_: bool) -> None:
    """Continue a stopped search where it was, up to its number of trials."""
    found = state.client().experiments.resume(experiment_id)
    if not follow_:
        state.output.result(found, lambda out: _started(out, found))
        return
    _follow_to_end(state, found, stop=stop_)


@experiments.command(epilog="\b\nExample:\n  studio experiments promote EXP 3 --wait\n")
@click.argument("experiment_id", metavar="EXP")
@click.argument("trial", type=click.IntRange(0))
@click.option("--format", "format_", default="onnx", show_default=True)
@click.option("--wait", is_flag=True, help="Until the evaluation and the export are done.")
@click.option("--download", type=click.Path(path_type=Path), help="Save the file here (waits).")
@json_option
@pass_state
def promote(
    state: State, experiment_id: str, trial: int, format_: str, wait: bool, download: Path | None
) -> None:
    """Evaluate a trial's run on the test subset and export it."""
    client = state.client()
    promotion = client.experiments.promote(experiment_id, trial, format=format_)
    result: dict[str, Any] = {"promotion": promotion}
    if (wait or download) and promotion.evaluation_id and promotion.export_id:
        state.output.note(f"Evaluating and exporting trial {trial} ...")
        result["evaluation"] = client.evaluations.wait(promotion.evaluation_id, timeout=None)
        result["export"] = client.exports.wait(promotion.export_id, timeout=None)
        if download and result["export"].status == "completed":
            result["saved"] = str(client.exports.download(promotion.export_id, download))

    def human(out: Console) -> None:
        out.print(f"Trial {trial} promoted: run {promotion.run_id or '?'}.", highlight=False)
        out.print(f"evaluation {promotion.evaluation_id}, export {promotion.export_id}")
        if "export" in result:
            ev, ex = result["evaluation"], result["export"]
            accuracy = (ev.metrics or {}).get("accuracy")
            out.print(f"test accuracy {metric('val_accuracy', accuracy)}; export {ex.status}")
            if "saved" in result:
                out.print(f"saved {result['saved']} (sha256 verified)", highlight=False)
        else:
            out.print(f"Wait for both: studio tasks show {promotion.export_id} --wait")

    state.output.result(result if "export" in result else promotion, human)
    failed = [k for k in ("evaluation", "export") if k in result and result[k].status == "failed"]
    if failed:
        raise Failure(f"trial {trial}'s {' and '.join(failed)} failed", FAILED)

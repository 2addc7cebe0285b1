"""The live table of a search's trials: state, hyperparameters, epoch, objectives, and the
front (``*``), fed by the experiment's SSE feed.

``ExperimentView`` starts from the experiment as read (``experiments.get``) and takes in the
feed's events one by one (``see``); it draws on a terminal (rich ``Live``), and elsewhere
prints one line per trial event (CI logs). ``trials_table`` draws an experiment as read, for
``show`` and the end of a follow. Imports rich and the client's models and the command's
output helpers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rich.console import Group
from rich.table import Table

from studio_client.cli.output import Output, table
from studio_client.models import Experiment, StreamEvent, Trial

__all__ = ["ExperimentView", "fixed_keys", "metric", "params_text", "trials_table"]

COMPLETED = "training.experiment_completed.v1"
STOPPED = "training.experiment_stopped.v1"
RESUMED = "training.experiment_resumed.v1"


def metric(name: str, value: Any) -> str:
    """An objective's value as people read it: 87.5% accuracy, 1.23 ms, 1.2M params."""
    if not isinstance(value, int | float):
        return "" if value is None else str(value)
    if name in ("val_accuracy", "macro_f1"):
        return f"{value * 100:.1f}%"
    if name == "params":
        return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{int(value)}"
    if name == "latency_ms":
        return f"{value:.2f} ms"
    return f"{value:.4f}"


def params_text(params: dict[str, Any], hide: Collection[str] = ()) -> str:
    """Hyperparameters but the model (and ``hide``), short: ``learning_rate=0.00123``."""
    shown = []
    for key, value in sorted(params.items()):
        if key == "model" or key in hide:
            continue
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        shown.append(f"{key}={text}")
    return " ".join(shown)


def fixed_keys(experiment: Experiment) -> set[str]:
    """The parameters every trial takes alike: not worth a column's width."""
    space = experiment.search_config
    return {k for k, v in space.items() if isinstance(v, dict) and v.get("type") == "fixed"}


def _metrics_of(experiment: Experiment) -> list[str]:
    names = [str(o.get("metric")) for o in experiment.objectives if o.get("metric")]
    return names or ["val_accuracy"]


def trials_table(experiment: Experiment, *, title: str | None = None) -> Table:
    """Every trial of ``experiment``: a ``*`` marks the front; the best value of each
    objective is followed by ``<``."""
    names = _metrics_of(experiment)
    best = {name: experiment.best.get(name) for name in names}
    hide = fixed_keys(experiment)
    rows = []
    for t in sorted(experiment.trials, key=lambda t: t.trial):
        values = {**t.metrics, **t.values}
        cells = [metric(n, values.get(n)) + (" <" if best[n] == t.trial else "") for n in names]
        rows.append(
            (
                f"{t.trial}{' *' if t.trial in experiment.front else ''}",
                t.state,
                t.params.get("model"),
                params_text(t.params, hide),
                t.epoch,
                *cells,
                t.run_id,
            )
        )
    columns = ("trial", "state", "model", "hyperparameters", "epoch", *names, "run")
    return table(columns, rows, title=title, numeric=("trial", "epoch", *names))


class ExperimentView:
    """A search as its feed tells it: one row per trial, kept in ``experiment``."""

    def __init__(self, experiment: Experiment, output: Output) -> None:
        self.experiment, self.output = experiment, output
        self.status = experiment.status
        self.by_run = {t.run_id: t.trial for t in experiment.trials if t.run_id}

    def __rich__(self) -> Group:
        e = self.experiment
        done = sum(t.state in ("completed", "pruned", "failed") for t in e.trials)
        title = f"experiment {e.id} · {self.status} · {done}/{e.max_trials or '?'} trials"
        return Group(trials_table(e, title=title))

    def see(self, event: StreamEvent) -> bool:
        """Take in one event of the feed; True once the experiment has ended."""
        data = event.data if isinstance(event.data, dict) else {}
        kind = event.event
        if kind == "snapshot":
            self._snapshot(data)
        elif kind == "front_updated":
            self._front(data)
        elif kind in ("trial_started", "trial_pruned", "trial_completed", "trial_failed"):
            self._trial(kind, data)
        elif kind == "epoch_end":
            self._epoch(data)
        elif data.get("type") in (STOPPED, RESUMED):
            self.status = "stopped" if data.get("type") == STOPPED else "running"
            self._line(f"experiment {self.status}")
        elif kind == "complete" and data.get("type") == COMPLETED:
            self.status = "completed"
            self._line(f"experiment completed: {data.get('reason') or 'done'}")
            return True
        return False

    def _row(self, number: int) -> Trial:
        found = self.experiment.trial(number)
        if found is None:
            found = Trial(trial=number, state="queued")
            self.experiment.trials.append(found)
        return found

    def _snapshot(self, data: dict[str, Any]) -> None:
        for raw in data.get("trials") or []:
            if isinstance(raw, dict) and isinstance(raw.get("trial"), int):
                self._merge(self._row(raw["trial"]), raw)
        experiment = data.get("experiment")
        self._front(experiment if isinstance(experiment, dict) else data)

    def _merge(self, row: Trial, data: dict[str, Any]) -> None:
        row.state = str(data.get("state") or row.state)
        row.run_id = data.get("run_id") or row.run_id
        row.params = data.get("params") or row.params
        row.values = data.get("values") or row.values
        row.metrics = data.get("metrics") or row.metrics
        row.epoch = data.get("epoch", row.epoch)
        if row.run_id:
            self.by_run[row.run_id] = row.trial

    def _trial(self, kind: str, data: dict[str, Any]) -> None:
        number = data.get("trial")
        if not isinstance(number, int):
            return
        row = self._row(number)
        state = {"trial_started": "running", "trial_pruned": "pruned"}.get(kind)
        self._merge(row, data | {"state": state or kind.removeprefix("trial_")})
        if kind == "trial_failed":
            row.message = str(data.get("message") or "")
        self._line(self._describe(kind, row, data))

    def _epoch(self, data: dict[str, Any]) -> None:
        number = data.get("trial")
        if not isinstance(number, int):  # a trial's run the gateway did not name the trial of
            number = self.by_run.get(str(data.get("run_id")))
        if not isinstance(number, int):
            return
        row = self._row(number)
        row.epoch = data.get("epoch", row.epoch)
        row.metrics = {**row.metrics, **{k: v for k, v in data.items() if k.startswith("val_")}}

    def _front(self, data: dict[str, Any]) -> None:
        e = self.experiment
        e.front = list(data.get("front") or e.front)
        e.best = dict(data.get("best") or e.best)
        e.importances = dict(data.get("importances") or e.importances)

    def _describe(self, kind: str, row: Trial, data: dict[str, Any]) -> str:
        head = f"trial {row.trial} {row.state}"
        if kind == "trial_started":
            shown = params_text(row.params, fixed_keys(self.experiment))
            return f"{head}: {row.params.get('model', '')} {shown}".rstrip()
        if kind == "trial_pruned":
            return f"{head} after epoch {data.get('epoch')} ({metric('', data.get('value'))})"
        if kind == "trial_failed":
            return f"{head}: {row.message}"
        values = "  ".join(f"{k} {metric(k, v)}" for k, v in row.values.items())
        return f"{head}: {values}"

    def _line(self, text: str) -> None:
        """Where no live table is drawn (CI logs), each trial's news as one line."""
        if self.output.live is None and not self.output.json:
            self.output.out.print(text, highlight=False)

"""What every figure of ``python -m bench`` shares: interleaved repeats, spreads and the table.

A figure measures the studio and its baseline side by side, alternating them ``rounds`` times so
that a machine whose speed drifts moves both; it reports min/median/max of each and the ratio of
the medians. Imports the standard library only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the table. ``ratio`` is studio/baseline in the figure's own sense (higher is
    better unless ``goal`` says otherwise); ``studio``/``baseline`` hold every repeat."""

    figure: str
    unit: str
    studio: list[float]
    baseline: list[float] = field(default_factory=list)
    ratio: float | None = None
    goal: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def interleave(
    studio: Callable[[], float], baseline: Callable[[], float], rounds: int
) -> tuple[list[float], list[float]]:
    """Alternates the two sides ``rounds`` times, baseline first in odd rounds, studio first in
    even ones, so neither side always runs on a warmer (or more loaded) machine."""
    s: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        order = ((b, baseline), (s, studio)) if i % 2 == 0 else ((s, studio), (b, baseline))
        for out, run in order:
            out.append(run())
    return s, b


def median_ratio(
    studio: list[float], baseline: list[float], *, lower_is_better: bool = False
) -> float:
    a, b = statistics.median(studio), statistics.median(baseline)
    return (b / a if lower_is_better else a / b) if a and b else float("nan")


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    fmt = ".0f" if statistics.median(values) >= 100 else ".3g"
    return "/".join(f"{v:{fmt}}" for v in (min(values), statistics.median(values), max(values)))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")
    )


def table(rows: list[Row]) -> str:
    """The markdown table of every row, as printed and pasted into bench/README.md."""
    head = ("figure", "unit", "studio min/med/max", "baseline min/med/max", "ratio", "goal", "note")
    lines = [head, tuple("-" * 3 for _ in head)]
    for r in rows:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        lines.append(
            (r.figure, r.unit, spread(r.studio), spread(r.baseline), ratio, r.goal, r.note)
        )
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def data_of(api: Any, method: str, path: str, **kwargs: Any) -> Any:
    """``data`` of a set-up call's answer, retried for up to 60 s while the studio answers 5xx
    (a busy machine): a figure's set-up must not break on what the figure does not measure."""
    deadline = time.monotonic() + 60
    while True:
        resp = api.request(method, path, **kwargs)
        if resp.status_code < 500 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if resp.status_code >= 400:
        raise RuntimeError(f"{method} {path} answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()["data"]

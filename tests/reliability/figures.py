"""The fault suite's figures: what each scenario counted, printed as one table at the end of the
run (``tests/reliability/conftest.py``) and written to a git-ignored ``figures.json``.

A scenario records what it measured, under its own name::

    figures.record("cluster: node killed during training", events_appended=412, events_lost=0,
                   duplicates_applied=0, sse_gaps=0, longest_outage_s=2.4)

The columns are the issue's: events appended, events lost (must be 0), duplicates applied
(must be 0), lease overlaps (must be 0), worst takeover time, SSE gaps (must be 0), longest
client-visible outage; and how many processes the scenario killed. A scenario asserts its
zeros itself; the table only reports them.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The columns, in the order the table prints them; a scenario records the ones it measures.
COLUMNS = (
    "events_appended",
    "events_lost",
    "duplicates_applied",
    "lease_overlaps",
    "worst_takeover_s",
    "sse_gaps",
    "longest_outage_s",
    "kills",
)

_rows: dict[str, dict[str, float | int]] = {}


def record(scenario: str, **values: float | int) -> None:
    """Record (or add to) a scenario's figures; unknown names are a mistake in the test."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}; known: {COLUMNS}")
    _rows.setdefault(scenario, {}).update(values)


def rows() -> dict[str, dict[str, float | int]]:
    return dict(_rows)


def table() -> list[str]:
    """The figures as a Markdown table, one row per scenario (blank where not measured)."""
    if not _rows:
        return []
    head = ["scenario", *(c.replace("_", " ") for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, values in _rows.items():
        cells = [_cell(values.get(c)) for c in COLUMNS]
        lines.append("| " + " | ".join([scenario, *cells]) + " |")
    return lines


def write(path: Path) -> None:
    path.write_text(json.dumps(_rows, indent=2, sort_keys=True) + "\n")


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)

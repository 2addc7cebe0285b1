"""What the ``studio`` command prints: rich tables for people, one JSON document for scripts.

``Output`` holds the two consoles (results on stdout, progress and notes on stderr) and the
``--json`` switch. With ``--json`` stdout carries exactly one JSON document (the command's
result) and nothing else; without it, the same result is drawn as tables and lines. A console
that is not a terminal (a pipe, a file, CI) gets plain lines, wide enough that ids are never
cut. Imports click, rich, msgspec and the client's models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

__all__ = [
    "Output",
    "number",
    "percent",
    "size",
    "table",
    "to_json",
    "when",
]

PLAIN_WIDTH = 160


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    width = int(os.environ.get("COLUMNS") or PLAIN_WIDTH)
    return Console(stderr=stderr, width=max(width, 100), soft_wrap=True, highlight=False)


class Output:
    """Where a command's result and its notes go; ``json`` set by ``--json``."""

    def __init__(self, *, json: bool = False) -> None:
        self.json = json
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)

    def result(self, data: Any, human: Callable[[Console], None]) -> None:
        """The command's result: ``data`` as JSON with ``--json``, else ``human`` draws it."""
        if self.json:
            click.echo(to_json(data))
        else:
            human(self.out)

    def note(self, message: str) -> None:
        """A line for the person at the terminal (stderr: never mixed into a result)."""
        self.err.print(message, highlight=False)

    @property
    def live(self) -> Console | None:
        """The console live displays (bars, tables) draw on, or None when nobody watches:
        stdout for people, stderr under ``--json``; only a terminal."""
        console = self.err if self.json else self.out
        return console if console.is_terminal else None


def to_json(data: Any) -> str:
    """``data`` (Structs, lists, dicts) as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(msgspec.to_builtins(data)), indent=2).decode()


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    numeric: Iterable[str] = (),
) -> Table:
    """A table; cells shown as ``str`` (None as an empty cell), ``numeric`` columns right."""
    right = set(numeric)
    grid = Table(title=title, title_justify="left", header_style="bold", show_edge=False)
    for name in columns:
        grid.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    return grid


def percent(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value * 100:.{digits}f}%"


def number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def size(value: int | None) -> str:
    """Bytes for people: 512 B, 1.5 KiB, 12.0 MiB."""
    if value is None:
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - the loop returns first


def when(stamp: str | None) -> str:
    """An ISO time as people read it in a list: ``2026-12-01 03:40`` (UTC)."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%d %H:%M")

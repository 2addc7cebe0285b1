"""Argument types the benchmark scripts share: a size below its least (0 images, -1 clients)
or an empty or unknown name in a list is a usage error naming the argument (exit 2) before any
work, never a StatisticsError or a silent empty table minutes later. Standard library only
(``bench.gpu_check`` imports it before its wheels are on the path).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any


def at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """A number of ``kind`` no smaller than ``low``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value >= low:  # NaN included
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, not {text}")
        return value

    return parse


def names(allowed: Iterable[str] | None = None) -> Callable[[str], str]:
    """Comma-separated names, none empty, each among ``allowed`` when given."""
    known = tuple(allowed) if allowed is not None else None

    def parse(text: str) -> str:
        items = [name.strip() for name in text.split(",")]
        if not text or not all(items):
            raise argparse.ArgumentTypeError(f"{text!r}: expected names separated by commas")
        unknown = [name for name in items if known is not None and name not in known]
        if known is not None and unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; expected {', '.join(known)}"
            )
        return ",".join(items)

    return parse


def typed(default: object) -> Callable[[str], Any]:
    """The type of an option from its default: a positive int, a positive float, or text."""
    if isinstance(default, bool) or not isinstance(default, int | float):
        return str
    return at_least(1, type(default))

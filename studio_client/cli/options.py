"""Options every ``studio`` command shares, and the parameter types of its arguments.

``--json`` is accepted before the command (``studio --json runs list``) and after it
(``studio runs list --json``); ``Ratios`` checks a split's ratios before anything is sent,
so a mistake is click's usage error (exit 2). Imports click and the command's state.
"""

from __future__ import annotations

import math
from typing import Any

import click

from studio_client.cli.state import State

__all__ = ["Ratios", "json_option"]


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).output.json = True


json_option = click.option(
    "--json",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_json,
    help="Print the result as one JSON document on stdout, for scripts.",
)


class Ratios(click.ParamType):
    """``TRAIN,VAL,TEST`` fractions that add up to 1 (``0.7,0.15,0.15``)."""

    name = "TRAIN,VAL,TEST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if len(parts) != 3:
            self.fail(f"{value!r} is not three fractions TRAIN,VAL,TEST (0.7,0.15,0.15)", param)
        try:
            ratios = tuple(float(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} holds something that is not a number", param, ctx)
        if any(not math.isfinite(r) or r < 0 or r > 1 for r in ratios):
            self.fail(f"each of {value!r} must lie between 0 and 1", param, ctx)
        if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            self.fail(f"{value!r} adds up to {sum(ratios):g}, not 1", param, ctx)
        if ratios[0] == 0:
            self.fail("the train fraction must be above 0", param, ctx)
        return ratios

"""``studio gc``: the operator's garbage collection of stored images and thumbnails that no
event names (what failed, cancelled or interrupted imports left), asked of the datasets service
over NATS (``CollectGarbage``), which alone knows which of its files events name. Lists by
default; ``--yes`` deletes. Imports ``contracts`` and ``services.cli``'s NATS helpers."""

from __future__ import annotations

import asyncio
import math
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from contracts.datasets import GarbageReport

#: Exit code when deleting was held off (imports running): nothing was wrong, try again later.
DEFERRED = 3


def _finite(seconds: float | None) -> float | None:
    """nan and inf pass ``FloatRange`` but travel as JSON null, which the service reads as
    "its default grace": refused here instead of deleting by a grace nobody asked for."""
    if seconds is not None and not math.isfinite(seconds):
        raise click.BadParameter(f"{seconds} is not a number of seconds")
    return seconds


@click.command(
    name="gc",
    help="list (or, with --yes, delete) stored images no event names",
    epilog="\b\nExamples:\n  studio gc\n  studio gc --yes\n  studio gc --yes --grace 0"
    "\n  studio gc --json"
    "\n\b\nExit codes: 0 done, 1 no datasets service answered, 3 deleting held off (imports"
    " running: try again later).",
)
@click.option("--yes", is_flag=True, help="delete them (default: only list them)")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    callback=lambda _ctx, _param, value: _finite(value),
    metavar="SECONDS",
    help="keep files younger than this (default: the service's STUDIO_GC_GRACE_S, 3600)",
)
@click.option("--workspace", help="data folder (./workspace)")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
def gc(yes: bool, grace: float | None, workspace: str | None, as_json: bool) -> None:
    import msgspec

    from contracts import common
    from contracts import datasets as c
    from services.cli import _nats_url, _request, _workspace

    url = _nats_url(_workspace(workspace)) or "nats://127.0.0.1:4222"
    command = c.CollectGarbage(delete=yes, grace_s=grace)
    answer = asyncio.run(_request(url, c.Subjects.COLLECT_GARBAGE, command, 600.0, "datasets"))
    if answer is None:
        print("datasets: no answer", file=sys.stderr)
        sys.exit(1)
    report = msgspec.json.decode(answer, type=c.GarbageReport | common.CommandRejected)
    if isinstance(report, common.CommandRejected):
        print(f"gc failed: {report.code}: {report.message}", file=sys.stderr)
        sys.exit(1)
    if as_json:
        print(msgspec.json.encode(report).decode())
    else:
        print(_said(report, yes))
    for sha in [] if as_json else report.sample:
        print(f"  {sha}")
    if yes and report.deferred:
        print(f"nothing was deleted: {report.deferred}; try again later", file=sys.stderr)
        sys.exit(DEFERRED)


def _said(report: GarbageReport, yes: bool) -> str:
    mib = report.bytes / 2**20
    what = f"{report.files} image(s) and {report.thumbnails} thumbnail(s), {mib:.1f} MiB"
    verb = "deleted" if report.deleted else "would delete" if not yes else "found"
    kept = f"; {report.recent} younger than the grace period kept" if report.recent else ""
    return f"{verb} {what} that no event names ({report.named} named){kept}"

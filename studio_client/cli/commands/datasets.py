"""``studio datasets export``: a project's dataset (or one split of it) as a COCO or YOLO
ZIP, streamed to a file here with a bytes bar, kept only once it reads as a whole ZIP, then
what it holds (from the archive's ``export.json``)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from studio_client.cli.live import transfer
from studio_client.cli.options import json_option
from studio_client.cli.output import size
from studio_client.cli.state import State, pass_state

__all__ = ["datasets"]

FORMATS = ("coco", "yolo")
SHOWN = 10


@click.group(
    epilog="""\b
Examples:
  studio datasets export birds --format coco -o birds-coco.zip
"""
)
def datasets() -> None:
    """A project's dataset: export it as COCO or YOLO."""


@datasets.command(
    epilog="""\b
Examples:
  studio datasets export birds --format coco -o birds-coco.zip
  studio datasets export birds --format yolo --split quick -o ./exports/
  studio datasets export PROJECT_ID --format coco --json
"""
)
@click.argument("project")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), required=True,
    help="COCO (labels and boxes) or YOLO (boxes only).",
)  # fmt: skip
@click.option(
    "--split", "split_ref", metavar="SPLIT",
    help="Only this split's images (id or name), a folder and annotation file per subset.",
)  # fmt: skip
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), default=Path("."), show_default=True,
    help="The ZIP file to write, or a folder (the studio's file name is kept).",
)  # fmt: skip
@json_option
@pass_state
def export(state: State, project: str, fmt: str, split_ref: str | None, output: Path) -> None:
    """Export PROJECT's dataset (id or name) as a ZIP of its images and COCO or YOLO
    annotations, saved at --output. The studio makes the ZIP as it sends it, so the bar
    shows bytes received (no total); a broken download leaves no file behind."""
    target = state.project(project)
    split_id = state.split(target, split_ref).id if split_ref else None
    client = state.client()
    with transfer(state.output, f"export {target.name}") as progress:
        saved = client.datasets.export(
            target.id, output, format=fmt, split_id=split_id, progress=progress
        )
    summary, length = _summary(saved), saved.stat().st_size
    data = {"path": str(saved), "bytes": length, "export": summary}
    state.output.result(data, lambda out: _show(out, saved, length, summary))


def _summary(path: Path) -> dict[str, Any]:
    """The archive's ``export.json`` (what it holds), or {} where it has none."""
    with zipfile.ZipFile(path) as archive:
        try:
            return dict(json.loads(archive.read("export.json")))
        except (KeyError, ValueError):
            return {}


def _show(out: Console, path: Path, length: int, summary: dict[str, Any]) -> None:
    out.print(f"Saved {path} ({size(length)}).")
    if summary:
        classes = summary.get("classes") or []
        out.print(
            f"{summary.get('images', 0)} images, {summary.get('boxes', 0)} boxes, "
            f"{len(classes)} classes ({summary.get('format', '')})"
        )
    left_out = summary.get("left_out") or []
    for item in left_out[:SHOWN]:
        out.print(f"left out: {item.get('filename')} ({item.get('reason')})")
    if len(left_out) > SHOWN:
        out.print(f"... and {len(left_out) - SHOWN} more (--json shows them all)")

"""``studio import`` (a server folder, a ZIP, or a folder of yours zipped and uploaded, with
an upload bar, then the import's live bar, then its report) and ``studio split``."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from studio_client.cli.errors import FAILED, INTERRUPTED, Failure, failure_of
from studio_client.cli.live import import_bar, transfer
from studio_client.cli.options import Ratios, json_option
from studio_client.cli.output import Output, table
from studio_client.cli.state import State, pass_state
from studio_client.errors import StudioError
from studio_client.models import Import, Split

__all__ = ["import_", "split"]

FORMATS = ("auto", "folder", "csv", "coco", "yolo")
PROBLEMS = ("duplicates", "corrupt", "skipped", "label_problems")
SHOWN = 10


@contextmanager
def _zipped(folder: Path) -> Iterator[Path]:
    """``folder`` as a temporary ZIP (stored, not compressed: images are compressed)."""
    with tempfile.TemporaryDirectory(prefix="studio-upload-") as temp:
        archive = Path(temp) / f"{folder.name or 'upload'}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
        yield archive


def _start(state: State, project_id: str, source: Path, fmt: str, upload: bool) -> Import:
    client = state.client()
    if source.is_dir() and not upload:
        try:
            return client.imports.local(project_id, str(source.resolve()), fmt)
        except StudioError as error:
            if error.code != "PATH_NOT_ALLOWED":
                raise
            failure = failure_of(error)
            failure.hint = (
                f"Send it from here instead: studio import {project_id} {source} --upload"
            )
            raise failure from error
    with _zipped(source) if source.is_dir() else _nothing(source) as archive:
        description = f"upload {archive.name}"
        with transfer(state.output, description) as progress:
            return client.imports.upload(project_id, archive, fmt, progress)


@contextmanager
def _nothing(path: Path) -> Iterator[Path]:
    yield path


def _follow(state: State, job: Import) -> Import:
    client = state.client()
    bar, see = import_bar(state.output)
    try:
        with bar:
            for event in client.imports.follow(job.id):
                see(event)
    except KeyboardInterrupt:
        raise Failure(
            f"stopped watching import {job.id}; it goes on in the studio",
            INTERRUPTED,
            hint=f"See it: studio tasks show {job.id}",
        ) from None
    return client.imports.get(job.id)


def _report(output: Output, job: Import) -> None:
    def human(out: Console) -> None:
        report: dict[str, Any] = job.report or {}
        if job.state == "completed":
            out.print(
                f"Imported {report.get('imported', 0)} of {report.get('files', 0)} files "
                f"({report.get('format', job.format)}) in {report.get('seconds', 0):.1f} s: "
                + ", ".join(f"{_total(report, k)} {k.replace('_', ' ')}" for k in PROBLEMS)
            )
        else:
            out.print(f"Import {job.id}: {job.state}")
        problems = [
            (kind.replace("_", " "), p.get("file"), p.get("reason") or p.get("kept_label"))
            for kind in PROBLEMS
            for p in (report.get(kind) or [])
        ]
        if problems:
            out.print(table(("problem", "file", "reason"), problems[:SHOWN]))
            more = sum(_total(report, k) for k in PROBLEMS) - SHOWN
            if more > 0:  # a report lists the first 1,000 of each kind, and counts them all
                out.print(f"... and {more} more (--json lists the first of each kind)")

    output.result(job, human)


def _total(report: dict[str, Any], kind: str) -> int:
    """How many files of ``kind`` the report counts (it may list only the first of them)."""
    return max(int(report.get(f"{kind}_total") or 0), len(report.get(kind) or []))


@click.command(
    "import",
    epilog="""\b
Examples:
  studio import birds ./birds.zip
  studio import birds /data/birds --format folder      # a folder the studio can read
  studio import birds ./my-photos --upload              # a folder of yours, zipped and sent
  studio import birds ./birds.zip --no-follow --json
""",
)
@click.argument("project")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--upload", is_flag=True, help="Zip a folder here and upload it.")
@click.option("--follow/--no-follow", default=True, show_default=True, help="Wait for the end.")
@json_option
@pass_state
def import_(state: State, project: str, source: Path, fmt: str, upload: bool, follow: bool) -> None:
    """Import images into PROJECT (id or name) from SOURCE: a ZIP file (uploaded), or a
    folder on the studio's machine (below its import roots; see `studio up --import-root`).

    Shows the upload's bar, then the import's bar (files, files/s, time left), then its
    report: images imported, duplicates, corrupt and skipped files, label problems.
    """
    target = state.project(project)
    job = _start(state, target.id, source, fmt, upload)
    if follow:
        job = _follow(state, job)
    _report(state.output, job)
    if job.state in ("failed", "cancelled"):
        message = (job.error or {}).get("message") or f"the import was {job.state}"
        code = (job.error or {}).get("code")
        raise Failure(f"import {job.id} {job.state}: {message}", FAILED, code=code)


@click.command(
    epilog="""\b
Examples:
  studio split birds --ratios 0.7,0.15,0.15 --seed 0
  studio split birds --ratios 0.8,0.2,0 --random --name quick
"""
)
@click.argument("project")
@click.option(
    "--ratios", type=Ratios(), default="0.7,0.15,0.15", show_default=True,
    help="Train, validation and test fractions, adding up to 1.",
)  # fmt: skip
@click.option(
    "--stratified/--random", default=True, show_default=True,
    help="Keep each class's share in every subset, or draw at random.",
)  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--name", default="split", show_default=True, help="The split's name.")
@json_option
@pass_state
def split(
    state: State,
    project: str,
    ratios: tuple[float, float, float],
    stratified: bool,
    seed: int,
    name: str,
) -> None:
    """Split PROJECT's images into train, validation and test subsets: seeded, and leak-free
    (identical images never land in two subsets)."""
    target = state.project(project)
    made = state.client().splits.create(
        target.id,
        name,
        ratios=ratios,
        strategy="stratified" if stratified else "random",
        seed=seed,
    )
    state.output.result(made, lambda out: _split_table(out, made))


def _split_table(out: Console, made: Split) -> None:
    subsets = ("train", "val", "test")
    classes = sorted({label for counts in made.counts.values() for label in counts})
    rows = [(label, *(made.counts.get(s, {}).get(label, 0) for s in subsets)) for label in classes]
    rows.append(("all", *(made.totals.get(s, 0) for s in subsets)))
    out.print(f"Split [bold]{made.name}[/bold] ({made.id}), {made.strategy}, seed {made.seed}:")
    out.print(table(("class", *subsets), rows, numeric=subsets))
    for deviation in made.deviations:
        out.print(f"note: {deviation}")

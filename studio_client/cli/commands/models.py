"""``studio eval``, ``studio export`` (with a verified download) and ``studio predict`` (a
classifier's top-k per image, or a detector's boxes as a table of normalised coordinates)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console

from studio_client.cli.errors import FAILED, Failure
from studio_client.cli.live import transfer
from studio_client.cli.options import json_option
from studio_client.cli.output import Output, number, percent, size, table
from studio_client.cli.state import State, pass_state
from studio_client.models import Evaluation, Export, Predictions

__all__ = ["evaluate", "export", "predict"]

WAIT = 1800.0
CHECKPOINT = click.Choice(["best", "last"])


def _waiting(output: Output, what: str) -> Any:
    console = output.live
    return console.status(f"{what} ...") if console else nullcontext()


def _failed(kind: str, job_id: str, error: dict[str, Any] | None) -> Failure:
    error = error or {}
    message = error.get("message") or "no reason given"
    return Failure(f"{kind} {job_id} failed: {message}", FAILED, code=error.get("code"))


@click.command(
    "eval",
    epilog="""\b
Examples:
  studio eval RUN
  studio eval RUN --checkpoint last --subset val --json
""",
)
@click.argument("run_id", metavar="RUN")
@click.option("--checkpoint", type=CHECKPOINT, default="best", show_default=True)
@click.option("--subset", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the result.")
@json_option
@pass_state
def evaluate(state: State, run_id: str, checkpoint: str, subset: str, wait: bool) -> None:
    """Evaluate a run's checkpoint on a subset of its split: accuracy, per-class precision,
    recall and F1, and the confusion matrix (a detector: COCO mAP, per-class AP and recall)."""
    client = state.client()
    job = client.evaluations.create(run_id, checkpoint=checkpoint, subset=subset)
    if wait:
        with _waiting(state.output, f"evaluating run {run_id}"):
            job = client.evaluations.wait(job.id, timeout=WAIT)
    state.output.result(job, lambda out: _evaluation(out, job))
    if job.status == "failed":
        raise _failed("evaluation", job.id, job.error)


def _detection(out: Console, m: dict[str, Any]) -> None:
    """A detector's per-class AP and recall, and how many of its images went worst."""
    rows = [
        (c["label"], percent(c["ap"]), percent(c["ap50"]), percent(c["recall"]), c["truths"])
        for c in m.get("per_class", [])
    ]
    out.print(table(("class", "AP", "AP@.5", "recall@.5", "boxes"), rows,
                    numeric=("AP", "AP@.5", "recall@.5", "boxes")))  # fmt: skip
    worst = m.get("worst") or []
    errors = sum(w["misses"] + w["false_positives"] for w in worst)
    out.print(f"{len(worst)} images with misses or false positives listed ({errors} errors).")


def _evaluation(out: Console, job: Evaluation) -> None:
    m = job.metrics or {}
    if job.status != "completed" or not m:
        out.print(f"Evaluation {job.id}: {job.status}.")
        return
    out.print(
        f"Evaluation {job.id} of run {job.run_id} ({job.checkpoint} checkpoint, epoch "
        f"{job.checkpoint_epoch}, {job.subset} subset, {m.get('images')} images): "
        + (f"mAP [bold]{percent(m.get('map'))}[/bold], mAP@.5 {percent(m.get('map50'))}"
           if m.get("task") == "detection"
           else f"accuracy [bold]{percent(m.get('accuracy'))}[/bold]")
    )  # fmt: skip
    if m.get("task") == "detection":
        _detection(out, m)
        return
    rows = [
        (c["label"], number(c["precision"], 3), number(c["recall"], 3), number(c["f1"], 3),
         c["support"])
        for c in m.get("per_class", [])
    ]  # fmt: skip
    out.print(table(("class", "precision", "recall", "f1", "support"), rows,
                    numeric=("precision", "recall", "f1", "support")))  # fmt: skip
    matrix = m.get("confusion_matrix") or {}
    labels = matrix.get("labels", [])
    grid = [(label, *row) for label, row in zip(labels, matrix.get("matrix", []), strict=False)]
    out.print(table(("true \\ predicted", *labels), grid, title="confusion matrix", numeric=labels))


@click.command(
    epilog="""\b
Examples:
  studio export RUN --format onnx --download model.onnx
  studio export RUN --download ./models/ --bundle     # ZIP with labels and model card
"""
)
@click.argument("run_id", metavar="RUN")
@click.option("--format", "fmt", default="onnx", show_default=True, help="Export format.")
@click.option("--checkpoint", type=CHECKPOINT, default="best", show_default=True)
@click.option("--download", type=click.Path(path_type=Path), help="Save the file here.")
@click.option("--bundle", is_flag=True, help="Download the bundle (model, labels, card).")
@json_option
@pass_state
def export(
    state: State, run_id: str, fmt: str, checkpoint: str, download: Path | None, bundle: bool
) -> None:
    """Export a run's checkpoint (parity-checked against the trained model) and, with
    --download, save it here with its sha256 verified."""
    client = state.client()
    job = client.exports.create(run_id, format=fmt, checkpoint=checkpoint)
    with _waiting(state.output, f"exporting run {run_id}"):
        job = client.exports.wait(job.id, timeout=WAIT)
    if job.status == "failed":
        state.output.result({"export": job, "file": None}, lambda out: _export(out, job, None))
        raise _failed("export", job.id, job.error)
    saved = None
    if download is not None:
        with transfer(state.output, f"download {download.name or 'export'}") as progress:
            saved = client.exports.download(job.id, download, progress, bundle=bundle)
    file = (
        {"path": str(saved), "sha256": job.bundle_sha256 if bundle else job.sha256}
        if saved
        else None
    )
    state.output.result({"export": job, "file": file}, lambda out: _export(out, job, saved))


def _export(out: Console, job: Export, saved: Path | None) -> None:
    if job.status != "completed":
        out.print(f"Export {job.id}: {job.status}.")
        return
    parity = job.parity or {}
    out.print(
        f"Export {job.id} ({job.format}, {job.checkpoint} checkpoint, epoch "
        f"{job.checkpoint_epoch}): {job.file_name}, {size(job.size)}, "
        f"parity {'passed' if parity.get('passed', True) else 'FAILED'}"
    )
    out.print(f"sha256 {job.sha256}", highlight=False)
    if saved is not None:
        out.print(f"Saved {saved} (sha256 verified).", highlight=False)


@click.command(
    epilog="""\b
Examples:
  studio predict EXPORT cat.jpg dog.png
  studio predict EXPORT photos/*.jpg --top-k 1 --json
"""
)
@click.argument("export_id", metavar="EXPORT")
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 100))
@json_option
@pass_state
def predict(state: State, export_id: str, images: tuple[Path, ...], top_k: int) -> None:
    """Labels and scores of IMAGES from an exported model (a detector's: its boxes)."""
    answer = state.client().exports.predict(export_id, list(images), top_k=top_k)
    if answer.detection:
        _boxes(state.output, answer, images)
        return
    pairs = list(zip(images, answer.predictions, strict=False))
    data = [
        {"image": str(path), "predictions": [{"label": p.label, "score": p.score} for p in preds]}
        for path, preds in pairs
    ]

    def human(out: Console) -> None:
        rows = [
            (path.name, *(f"{p.label} {percent(p.score)}" for p in preds[:top_k]))
            for path, preds in pairs
        ]
        out.print(table(("image", *(f"#{i + 1}" for i in range(top_k))), rows))

    state.output.result({"export_id": answer.export_id, "images": data}, human)


def _boxes(output: Output, answer: Predictions, images: tuple[Path, ...]) -> None:
    """A detector's answer: one row per box (an image without any says so), coordinates
    normalised to the image as the studio sends them."""
    pairs = list(zip(images, answer.boxes, strict=False))
    data = [
        {"image": str(path), "boxes": [msgspec.to_builtins(box) for box in boxes]}
        for path, boxes in pairs
    ]

    def human(out: Console) -> None:
        rows: list[tuple[Any, ...]] = []
        for path, boxes in pairs:
            if not boxes:
                rows.append((path.name, "", "no boxes", "", "", "", "", ""))
            for i, b in enumerate(boxes, 1):
                coords = (number(b.x, 3), number(b.y, 3), number(b.w, 3), number(b.h, 3))
                rows.append((path.name, i, b.label, percent(b.score), *coords))
        columns = ("image", "#", "label", "score", "x", "y", "w", "h")
        out.print(table(columns, rows, numeric=("#", "score", "x", "y", "w", "h")))

    output.result({"export_id": answer.export_id, "task": answer.task, "images": data}, human)

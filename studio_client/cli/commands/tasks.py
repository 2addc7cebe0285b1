"""``studio tasks list|show``: every background job (imports, runs, evaluations, exports)."""

from __future__ import annotations

from contextlib import nullcontext

import click
from rich.console import Console

from studio_client.cli.errors import FAILED, Failure
from studio_client.cli.options import json_option
from studio_client.cli.output import percent, table, when
from studio_client.cli.state import State, pass_state
from studio_client.models import Task

__all__ = ["tasks"]

KINDS = ("import", "training", "evaluation", "export", "experiment")
STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
COLUMNS = ("task", "kind", "status", "progress", "created", "finished")


def _rows(items: list[Task]) -> list[tuple[object, ...]]:
    return [
        (
            t.task_id,
            t.kind,
            t.status,
            percent(t.progress, 0),
            when(t.created_at),
            when(t.finished_at),
        )
        for t in items
    ]


@click.group(
    epilog="""\b
Examples:
  studio tasks list --status processing
  studio tasks show TASK --wait
"""
)
def tasks() -> None:
    """Background jobs of every kind, in one view."""


@tasks.command("list", epilog="\b\nExample:\n  studio tasks list --kind training --json\n")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--project", metavar="PROJECT", help="Only this project's (id or name).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@json_option
@pass_state
def list_(
    state: State, kind: str | None, status: str | None, project: str | None, limit: int
) -> None:
    """Background jobs you can see, newest first."""
    project_id = state.project(project).id if project else None
    page = state.client().tasks.list(kind=kind, status=status, project_id=project_id, limit=limit)

    def human(out: Console) -> None:
        if not page.items:
            out.print("No tasks.")
            return
        out.print(table(COLUMNS, _rows(page.items)))

    state.output.result(page.items, human)


@tasks.command(epilog="\b\nExample:\n  studio tasks show TASK --wait --json\n")
@click.argument("task_id", metavar="TASK")
@click.option("--wait", is_flag=True, help="Wait until it is over.")
@json_option
@pass_state
def show(state: State, task_id: str, wait: bool) -> None:
    """One background job: its status, progress, result or error."""
    client = state.client()
    if wait:
        console = state.output.live
        with console.status(f"waiting for task {task_id} ...") if console else nullcontext():
            task = client.tasks.wait(task_id)
    else:
        task = client.tasks.get(task_id)

    def human(out: Console) -> None:
        out.print(table(COLUMNS, _rows([task])))
        if task.result:
            out.print("result: " + ", ".join(f"{k} {v}" for k, v in task.result.items()))
        if task.error:
            out.print(f"error: {task.error.get('message')} ({task.error.get('code')})")

    state.output.result(task, human)
    if wait and task.status == "failed":
        raise Failure(f"task {task_id} failed", FAILED)

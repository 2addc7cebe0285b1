"""``studio projects list|show|create|archive|restore``."""

from __future__ import annotations

from collections.abc import Callable

import click
from rich.console import Console

from studio_client.cli.options import json_option
from studio_client.cli.output import table, when
from studio_client.cli.state import State, pass_state
from studio_client.models import Project

__all__ = ["projects"]

COLUMNS = ("id", "name", "role", "status", "created")


def _rows(items: list[Project]) -> list[tuple[object, ...]]:
    return [(p.id, p.name, p.role, p.status, when(p.created_at)) for p in items]


def _show(project: Project, verb: str) -> Callable[[Console], None]:
    def human(out: Console) -> None:
        out.print(f"{verb} project [bold]{project.name}[/bold] ({project.id}).")

    return human


@click.group(
    epilog="""\b
Examples:
  studio projects list
  studio projects create birds --description "Garden birds"
  studio projects archive birds
"""
)
def projects() -> None:
    """Your projects: list, show, create, archive and restore them."""


@projects.command("list", epilog="\b\nExamples:\n  studio projects list --all\n")
@click.option("--archived", "status", flag_value="archived", help="Only archived projects.")
@click.option("--all", "status", flag_value="all", help="Active and archived projects.")
@click.option("--search", "-q", metavar="TEXT", help="Only names containing TEXT.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@json_option
@pass_state
def list_(state: State, status: str | None, search: str | None, limit: int) -> None:
    """The projects you are a member of, newest first."""
    page = state.client().projects.list(status=status or "active", q=search, limit=limit)

    def human(out: Console) -> None:
        if not page.items:
            out.print("No projects yet. Make one: studio projects create NAME")
            return
        out.print(table(COLUMNS, _rows(page.items)))
        if page.total is not None and page.total > len(page.items):
            out.print(f"{len(page.items)} of {page.total} shown (--limit).")

    state.output.result(page.items, human)


@projects.command(epilog="\b\nExample:\n  studio projects show birds\n")
@click.argument("project")
@json_option
@pass_state
def show(state: State, project: str) -> None:
    """One project (by id or name), with its dataset's counts."""
    found = state.project(project)
    dataset = state.client().datasets.get(found.id)

    def human(out: Console) -> None:
        out.print(table(COLUMNS, _rows([found])))
        classes = ", ".join(f"{k} {v}" for k, v in sorted(dataset.classes.items()))
        out.print(f"{dataset.images} images in {len(dataset.classes)} classes: {classes}")
        out.print(f"{len(dataset.splits)} splits, {len(dataset.imports)} imports")

    state.output.result({"project": found, "dataset": dataset}, human)


@projects.command(epilog='\b\nExample:\n  studio projects create birds -d "Garden birds"\n')
@click.argument("name")
@click.option("--description", "-d", default="", help="What it is for.")
@click.option(
    "--task-type",
    type=click.Choice(["classification", "detection"]),
    default="classification",
    show_default=True,
)
@json_option
@pass_state
def create(state: State, name: str, description: str, task_type: str) -> None:
    """Make a project (you are its owner)."""
    made = state.client().projects.create(name, description=description, task_type=task_type)
    state.output.result(made, _show(made, "Created"))


@projects.command(epilog="\b\nExample:\n  studio projects archive birds\n")
@click.argument("project")
@json_option
@pass_state
def archive(state: State, project: str) -> None:
    """Archive a project: hidden from the list, read-only until restored."""
    done = state.client().projects.archive(state.project(project).id)
    state.output.result(done, _show(done, "Archived"))


@projects.command(epilog="\b\nExample:\n  studio projects restore birds\n")
@click.argument("project")
@json_option
@pass_state
def restore(state: State, project: str) -> None:
    """Bring an archived project back."""
    done = state.client().projects.restore(state.project(project).id)
    state.output.result(done, _show(done, "Restored"))

"""The ``studio`` command for users: a click group of the studio's work, on the Python client.

``build(*extra)`` makes the group; ``services.cli`` adds the operator's commands (``up``,
``ping``, ``rebuild``) to it, so that one ``studio`` does both. Every refusal of the studio ends
the command with its message and request id on stderr and a non-zero exit code (``errors``).
Imports click and the command's own modules (never the studio's services).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from studio_client.cli.errors import EXIT_CODES_HELP, INTERRUPTED, Failure, failure_of
from studio_client.cli.options import json_option
from studio_client.cli.state import State
from studio_client.errors import StudioError

__all__ = ["HELP", "StudioGroup", "build", "main"]

HELP = f"""AI Studio from the terminal: projects, imports, splits, training, evaluation,
exports and predictions, with live progress.

Output is for people by default; add --json to any command for one JSON document on stdout
(nothing else is written there). {EXIT_CODES_HELP}

\b
Examples:
  studio login --url http://127.0.0.1:8000 --user admin
  studio projects create birds
  studio import birds ./birds.zip
  studio split birds --ratios 0.7,0.15,0.15 --seed 0
  studio train birds --model resnet18 --epochs 10 --follow
  studio experiments create birds --family smallcnn --max-trials 8 --follow
  studio --json runs list --project birds | jq '.[0].id'

\b
Shell completion (bash; zsh_source and fish_source likewise):
  eval "$(_STUDIO_COMPLETE=bash_source studio)"
"""


class StudioGroup(click.Group):
    """A group whose commands end in a clear message, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StudioError as error:
            raise failure_of(error) from error
        except TimeoutError as error:
            raise Failure(f"gave up waiting: {error}") from error
        except KeyboardInterrupt:
            raise Failure("interrupted", INTERRUPTED) from None


def build(*extra: click.Command) -> click.Group:
    """The ``studio`` group with every user command, and ``extra`` commands beside them."""

    @click.group(
        "studio",
        cls=StudioGroup,
        help=HELP,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @click.option(
        "--url",
        envvar="STUDIO_URL",
        metavar="URL",
        help="The studio's address (STUDIO_URL; else the one `studio login` stored).",
    )
    @json_option
    @click.version_option(package_name="ai-studio", prog_name="studio")
    @click.pass_context
    def group(ctx: click.Context, url: str | None) -> None:
        state = ctx.ensure_object(State)
        state.url = url or state.url
        ctx.call_on_close(state.close)

    for command in (*_user_commands(), *extra):
        group.add_command(command)
    return group


def _user_commands() -> list[click.Command]:
    from studio_client.cli.commands import (
        account,
        data,
        datasets,
        experiments,
        models,
        projects,
        tasks,
        training,
    )

    return [
        *account.COMMANDS,
        projects.projects,
        data.import_,
        data.split,
        datasets.datasets,
        training.train,
        training.runs,
        experiments.experiments,
        models.evaluate,
        models.export,
        models.predict,
        tasks.tasks,
    ]


def main(argv: list[str] | None = None, *, extra: tuple[click.Command, ...] = ()) -> None:
    """Run ``studio`` (``python -m studio_client.cli``): exits with the command's code."""
    command: Callable[..., Any] = build(*extra).main
    command(args=argv, prog_name="studio")


cli = build()

"""Exit codes of the ``studio`` command, and the one exception that ends a command with one.

Every refusal reaches the user as one short message on stderr, with the envelope's code and
request id (what an operator asks for), never a traceback; stdout stays empty, so a script
reading ``--json`` output never parses half an answer. Imports click and the client's errors.
"""

from __future__ import annotations

from typing import IO, Any

import click

from studio_client.errors import (
    Forbidden,
    NotFound,
    StudioError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)

__all__ = [
    "AUTH",
    "EXIT_CODES_HELP",
    "FAILED",
    "INTERRUPTED",
    "NOT_FOUND",
    "OK",
    "UNAVAILABLE",
    "USAGE",
    "Failure",
    "failure_of",
]

OK = 0
#: The studio refused, or the job failed (a run, an import, an export).
FAILED = 1
#: The command line itself is wrong (click's usage errors), or the studio said the input is.
USAGE = 2
#: Not signed in, the session is over, or the role is missing.
AUTH = 3
#: The project, run, export or task named does not exist (or is not visible to you).
NOT_FOUND = 4
#: The studio cannot be reached or cannot answer now.
UNAVAILABLE = 5
#: Ctrl-C: following stopped (the job itself goes on unless --stop said otherwise).
INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 refused or the job failed; 2 bad usage or input; "
    "3 not signed in or not allowed; 4 not found; 5 studio unreachable; 130 Ctrl-C."
)


class Failure(click.ClickException):
    """A command that cannot do what was asked: ``message`` (and the envelope's ``code`` and
    ``request_id`` when the studio said it) on stderr, and ``exit_code``."""

    def __init__(
        self,
        message: str,
        exit_code: int = FAILED,
        *,
        code: str | None = None,
        request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click's class default, per failure
        self.code, self.request_id, self.hint = code, request_id, hint

    def show(self, file: IO[Any] | None = None) -> None:
        lines = [f"error: {self.message}"]
        facts = [f"code {self.code}"] if self.code else []
        facts += [f"request id {self.request_id}"] if self.request_id else []
        if facts:
            lines.append("  (" + ", ".join(facts) + ")")
        if self.hint:
            lines.append(f"  {self.hint}")
        click.echo("\n".join(lines), err=True, file=file)


def failure_of(error: StudioError) -> Failure:
    """The ``Failure`` a refusal of the studio ends the command with."""
    message = error.message or str(error)
    if error.field and error.field not in message:
        message = f"{error.field}: {message}"
    for detail in error.details[1:]:  # the first is the message itself
        message += f"\n  {detail.get('field', '')}: {detail.get('message', '')}"
    exit_code, hint = FAILED, None
    if isinstance(error, Unauthorized):
        exit_code, hint = AUTH, "Sign in again: studio login"
    elif isinstance(error, Forbidden):
        exit_code = AUTH
    elif isinstance(error, NotFound):
        exit_code = NOT_FOUND
    elif isinstance(error, ValidationFailed):
        exit_code = USAGE
    elif isinstance(error, Unavailable):
        exit_code = UNAVAILABLE
    return Failure(message, exit_code, code=error.code, request_id=error.request_id, hint=hint)

"""The one refusal every decider raises, whatever its context.

A decider refuses a command by raising a ``DomainError`` (or a subclass that names the
condition, e.g. ``ProjectAlreadyArchived(Conflict)``); the kernel's ``execute`` answers it as a
``CommandRejected`` with its ``code``, ``message`` and ``field``, never retries it, and the gateway
maps the code to an HTTP status. No HTTP status lives here: the code says what happened, the
edge decides how to say it. Pure: imports ``contracts.common`` only.
"""

from __future__ import annotations

from typing import ClassVar

from contracts import common


class DomainError(Exception):
    """A command the domain refuses; nothing was stored."""

    code: ClassVar[str] = common.CONFLICT

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


class InvalidInput(DomainError):
    """The command's own values are wrong (answered 422 with ``field``)."""

    code = common.VALIDATION_ERROR


class NotFound(DomainError):
    """What the command names does not exist."""

    code = common.NOT_FOUND


class Conflict(DomainError):
    """The command does not fit the aggregate's current state."""

    code = common.CONFLICT


class Refused(DomainError):
    """A refusal whose code names its own condition, e.g. ``CHECKPOINT_MISSING`` when a
    checkpoint the command needs is gone or not the file that was recorded."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.code = code  # type: ignore[misc]

"""Command handlers: decide each projects command against the stored project and store it.

Imports the domain, ``contracts`` and kernel ports; the repository is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from contracts.common import Reply
from contracts.projects import Command
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.repository import Repository
from services.projects import domain


async def handle(
    command: Command, headers: Mapping[str, str], *, projects: Repository[domain.State]
) -> Reply:
    return await execute(
        projects,
        command.project_id,
        command,
        partial(_decide, command=command),
        headers=headers,
        refusals=(DomainError,),
        expected=getattr(command, "expected_version", None),
        noun="project",
    )


def _decide(state: domain.State, *, command: Command) -> list[domain.Event]:
    return domain.decide(state, command)

"""Command handlers: decide each projects command against the stored project and store it.

Imports the domain, ``contracts`` and kernel ports; the repository is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import msgspec

from contracts.common import CommandRejected, Reply
from contracts.projects import LAST_OWNER, Command
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.repository import Repository
from services.projects import domain

#: HTTP statuses of refusals whose code alone does not say (a last owner is a conflict).
_STATUS = {LAST_OWNER: 409}


async def handle(
    command: Command, headers: Mapping[str, str], *, projects: Repository[domain.State]
) -> Reply:
    reply = await execute(
        projects,
        command.project_id,
        command,
        partial(_decide, command=command),
        headers=headers,
        refusals=(DomainError,),
        expected=getattr(command, "expected_version", None),
        noun="project",
    )
    if isinstance(reply, CommandRejected) and reply.code in _STATUS:
        return msgspec.structs.replace(reply, status=_STATUS[reply.code])
    return reply


def _decide(state: domain.State, *, command: Command) -> list[domain.Event]:
    return domain.decide(state, command)

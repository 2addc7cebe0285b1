"""The Project aggregate as a pure decider: ``decide(state, command)`` and ``evolve(state, event)``.

No I/O, no clock, no ids: the handler stamps the envelope onto the events this returns.
Imports ``contracts`` and the kernel's ``DomainError`` only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import reduce
from types import MappingProxyType

from contracts.projects import (
    DESCRIPTION_MAX,
    LAST_OWNER,
    NAME_MAX,
    AddMember,
    ArchiveProject,
    ChangeMemberRole,
    Command,
    CreateProject,
    Event,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    ProjectArchived,
    ProjectCreated,
    ProjectDescriptionUpdated,
    ProjectRenamed,
    ProjectRestored,
    RemoveMember,
    RestoreProject,
    UpdateProject,
)
from services.kernel.domain import Conflict, InvalidInput, NotFound, Refused
from services.kernel.domain import DomainError as DomainError  # callers catch domain.DomainError

TASK_TYPES = ("classification", "detection")
OWNER = "owner"


def _no_members() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Project:
    project_id: str
    name: str
    description: str
    task_type: str
    archived: bool = False
    #: The message id of the command that created it: a retried create is recognised by it.
    created_by: str | None = None
    #: user id → role ("owner", "editor", "viewer"); a project always has an owner.
    members: Mapping[str, str] = field(default_factory=_no_members)

    @property
    def owners(self) -> list[str]:
        return [user for user, role in self.members.items() if role == OWNER]


State = Project | None


class InvalidProject(InvalidInput):
    """A name, description or task type a project cannot have."""


class ProjectNotFound(NotFound):
    """No project has that id."""


class ProjectAlreadyExists(Conflict):
    """Another create already made a project with that id."""


class IdempotencyKeyReused(InvalidInput):
    """A retried create (same key) that asks for a different project."""


class ProjectIsArchived(Conflict):
    """An archived project is read-only until it is restored."""


class ProjectAlreadyArchived(Conflict):
    """Archiving a project that is archived."""


class ProjectNotArchived(Conflict):
    """Restoring a project that is not archived."""


class MemberAlreadyAdded(Conflict):
    """Adding a user who is a member already (change their role instead)."""


class MemberNotFound(NotFound):
    """The user is not a member of the project."""


class LastOwner(Refused):
    """Removing or demoting the project's only owner would leave nobody to manage it."""

    def __init__(self, message: str) -> None:
        super().__init__(LAST_OWNER, message, field="user_id")


def decide(state: State, command: Command) -> list[Event]:
    """The events ``command`` causes on ``state``, or a ``DomainError`` saying why not."""
    match command:
        case CreateProject():
            return _create(state, command)
        case UpdateProject():
            return _update(_existing(state, command.project_id), command)
        case ArchiveProject():
            project = _existing(state, command.project_id)
            if project.archived:
                raise ProjectAlreadyArchived(f"project {project.project_id} is already archived")
            return [ProjectArchived(project_id=project.project_id)]
        case RestoreProject():
            project = _existing(state, command.project_id)
            if not project.archived:
                raise ProjectNotArchived(f"project {project.project_id} is not archived")
            return [ProjectRestored(project_id=project.project_id)]
        case AddMember() | ChangeMemberRole() | RemoveMember():
            return _members(_existing(state, command.project_id), command)
    raise TypeError(f"not a projects command: {type(command).__name__}")


def evolve(state: State, event: Event) -> State:
    match event:
        case ProjectCreated():
            return Project(
                project_id=event.project_id,
                name=event.name,
                description=event.description,
                task_type=event.task_type,
                created_by=event.causation_id,
            )
        case ProjectRenamed():
            return replace(_existing(state, event.project_id), name=event.name)
        case ProjectDescriptionUpdated():
            return replace(_existing(state, event.project_id), description=event.description)
        case ProjectArchived():
            return replace(_existing(state, event.project_id), archived=True)
        case ProjectRestored():
            return replace(_existing(state, event.project_id), archived=False)
        case MemberAdded() | MemberRoleChanged():
            project = _existing(state, event.project_id)
            members = {**project.members, event.user_id: event.role}
            return replace(project, members=MappingProxyType(members))
        case MemberRemoved():
            project = _existing(state, event.project_id)
            members = {u: r for u, r in project.members.items() if u != event.user_id}
            return replace(project, members=MappingProxyType(members))
    return state


def fold(events: list[Event], state: State = None) -> State:
    return reduce(evolve, events, state)


def _create(state: State, command: CreateProject) -> list[Event]:
    name = valid_name(command.name)
    description = valid_description(command.description)
    task_type = valid_task_type(command.task_type)
    if state is not None:
        if state.created_by != command.message_id:
            raise ProjectAlreadyExists(f"project {command.project_id} already exists")
        if (state.name, state.description, state.task_type) != (name, description, task_type):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used to create a different project",
                field="Idempotency-Key",
            )
        return []  # the same create, retried: it already happened
    return [
        ProjectCreated(
            project_id=command.project_id, name=name, description=description, task_type=task_type
        ),
        # Whoever creates a project owns it: a project is never without someone to manage it.
        MemberAdded(project_id=command.project_id, user_id=command.actor, role=OWNER),
    ]


def _members(project: Project, command: AddMember | ChangeMemberRole | RemoveMember) -> list[Event]:
    """Membership changes, archived or not: who may see a project is not its content, and
    taking someone's access away must not wait for a restore."""
    pid, user = project.project_id, command.user_id
    role = project.members.get(user)
    if isinstance(command, AddMember):
        if role is not None:
            raise MemberAlreadyAdded(
                f"{user} is already a member of project {pid} (as {role})", field="user_id"
            )
        return [MemberAdded(project_id=pid, user_id=user, role=command.role)]
    if role is None:
        raise MemberNotFound(f"{user} is not a member of project {pid}", field="user_id")
    if isinstance(command, ChangeMemberRole) and command.role == role:
        return []
    if role == OWNER and project.owners == [user]:
        raise LastOwner(f"{user} is the only owner of project {pid}; make another owner first")
    if isinstance(command, ChangeMemberRole):
        return [MemberRoleChanged(project_id=pid, user_id=user, role=command.role)]
    return [MemberRemoved(project_id=pid, user_id=user)]


def _update(project: Project, command: UpdateProject) -> list[Event]:
    if project.archived:
        raise ProjectIsArchived(f"project {project.project_id} is archived; restore it first")
    events: list[Event] = []
    if command.name is not None:
        name = valid_name(command.name)
        if name != project.name:
            events.append(ProjectRenamed(project_id=project.project_id, name=name))
    if command.description is not None:
        description = valid_description(command.description)
        if description != project.description:
            events.append(
                ProjectDescriptionUpdated(project_id=project.project_id, description=description)
            )
    return events


def _existing(state: State, project_id: str) -> Project:
    if state is None:
        raise ProjectNotFound(f"project {project_id} does not exist")
    return state


def valid_name(raw: str) -> str:
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InvalidProject("name must not be empty", field="name")
    if len(name) > NAME_MAX:
        raise InvalidProject(f"name must be at most {NAME_MAX} characters", field="name")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidProject("name must not contain control characters", field="name")
    return name


def valid_description(raw: str) -> str:
    description = raw.strip()
    if len(description) > DESCRIPTION_MAX:
        raise InvalidProject(
            f"description must be at most {DESCRIPTION_MAX} characters", field="description"
        )
    return description


def valid_task_type(raw: str) -> str:
    if raw not in TASK_TYPES:
        raise InvalidProject(f"task_type must be one of {', '.join(TASK_TYPES)}", field="task_type")
    return raw

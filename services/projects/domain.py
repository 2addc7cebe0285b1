"""The Project aggregate as a pure decider: ``decide(state, command)`` and ``evolve(state, event)``.

No I/O, no clock, no ids: the handler stamps the envelope onto the events this returns.
Imports ``contracts`` and the kernel's ``DomainError`` only.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from functools import reduce

from contracts.projects import (
    DESCRIPTION_MAX,
    NAME_MAX,
    ArchiveProject,
    Command,
    CreateProject,
    Event,
    ProjectArchived,
    ProjectCreated,
    ProjectDescriptionUpdated,
    ProjectRenamed,
    ProjectRestored,
    RestoreProject,
    UpdateProject,
)
from services.kernel.domain import Conflict, InvalidInput, NotFound
from services.kernel.domain import DomainError as DomainError  # callers catch domain.DomainError

TASK_TYPES = ("classification", "detection")
AVAILABLE_TASK_TYPES = ("classification",)


@dataclass(frozen=True)
class Project:
    project_id: str
    name: str
    description: str
    task_type: str
    archived: bool = False
    #: The message id of the command that created it: a retried create is recognised by it.
    created_by: str | None = None


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
        )
    ]


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
    if raw not in AVAILABLE_TASK_TYPES:
        raise InvalidProject(
            f"{raw} projects are not available yet; use classification", field="task_type"
        )
    return raw

"""The projects context: commands, events and subjects of the Project aggregate."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from contracts.common import Id, Keyword
from contracts.envelope import Message

CONTEXT: Final = "projects"
STREAM: Final = "PROJECTS"
EVENTS: Final = "evt.projects.>"

NAME_MAX: Final = 200
DESCRIPTION_MAX: Final = 5000

TaskType = Literal["classification", "detection"]
Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX)]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX)]


def event_subject(project_id: str) -> str:
    """The one subject that holds every event of one project."""
    return f"evt.projects.{project_id}"


class Subjects:
    """Command subjects, ``cmd.<context>.<handler name>``."""

    CREATE: Final = "cmd.projects.create_project"
    UPDATE: Final = "cmd.projects.update_project"
    ARCHIVE: Final = "cmd.projects.archive_project"
    RESTORE: Final = "cmd.projects.restore_project"


# --- commands -------------------------------------------------------------------------------


class CreateProject(Message, frozen=True, tag="projects.create_project.v1"):
    project_id: Id
    name: Name
    description: Description = ""
    task_type: Keyword = "classification"


class UpdateProject(Message, frozen=True, tag="projects.update_project.v1"):
    """Rename and/or re-describe a project, decided together so that a change is all or nothing.

    ``None`` leaves a field as it is. ``expected_version`` (when given) must equal the
    project's current version, else the command is refused as a conflict.
    """

    project_id: Id
    name: Name | None = None
    description: Description | None = None
    expected_version: int | None = None


class ArchiveProject(Message, frozen=True, tag="projects.archive_project.v1"):
    project_id: Id
    expected_version: int | None = None


class RestoreProject(Message, frozen=True, tag="projects.restore_project.v1"):
    project_id: Id
    expected_version: int | None = None


Command = CreateProject | UpdateProject | ArchiveProject | RestoreProject

# --- events ---------------------------------------------------------------------------------


class ProjectCreated(Message, frozen=True, tag="projects.project_created.v1"):
    project_id: str
    name: str
    description: str = ""
    task_type: str = "classification"


class ProjectRenamed(Message, frozen=True, tag="projects.project_renamed.v1"):
    project_id: str
    name: str


class ProjectDescriptionUpdated(
    Message, frozen=True, tag="projects.project_description_updated.v1"
):
    project_id: str
    description: str


class ProjectArchived(Message, frozen=True, tag="projects.project_archived.v1"):
    project_id: str


class ProjectRestored(Message, frozen=True, tag="projects.project_restored.v1"):
    project_id: str


Event = (
    ProjectCreated | ProjectRenamed | ProjectDescriptionUpdated | ProjectArchived | ProjectRestored
)

ALL: tuple[type[Message], ...] = (
    CreateProject,
    UpdateProject,
    ArchiveProject,
    RestoreProject,
    ProjectCreated,
    ProjectRenamed,
    ProjectDescriptionUpdated,
    ProjectArchived,
    ProjectRestored,
)

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
#: What a member may do in a project: a viewer reads, an editor also changes its data, an owner
#: also archives it and manages its members.
Role = Literal["owner", "editor", "viewer"]
#: The refusal code for removing or demoting a project's only owner.
LAST_OWNER: Final = "LAST_OWNER"


def event_subject(project_id: str) -> str:
    """The one subject that holds every event of one project."""
    return f"evt.projects.{project_id}"


class Subjects:
    """Command subjects, ``cmd.<context>.<handler name>``."""

    CREATE: Final = "cmd.projects.create_project"
    UPDATE: Final = "cmd.projects.update_project"
    ARCHIVE: Final = "cmd.projects.archive_project"
    RESTORE: Final = "cmd.projects.restore_project"
    ADD_MEMBER: Final = "cmd.projects.add_member"
    CHANGE_MEMBER_ROLE: Final = "cmd.projects.change_member_role"
    REMOVE_MEMBER: Final = "cmd.projects.remove_member"


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


class AddMember(Message, frozen=True, tag="projects.add_member.v1"):
    project_id: Id
    user_id: Id
    role: Role


class ChangeMemberRole(Message, frozen=True, tag="projects.change_member_role.v1"):
    project_id: Id
    user_id: Id
    role: Role


class RemoveMember(Message, frozen=True, tag="projects.remove_member.v1"):
    project_id: Id
    user_id: Id


Command = (
    CreateProject
    | UpdateProject
    | ArchiveProject
    | RestoreProject
    | AddMember
    | ChangeMemberRole
    | RemoveMember
)

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


class MemberAdded(Message, frozen=True, tag="projects.member_added.v1"):
    """``CreateProject`` adds its actor as the first owner with this event."""

    project_id: str
    user_id: str
    role: str


class MemberRoleChanged(Message, frozen=True, tag="projects.member_role_changed.v1"):
    project_id: str
    user_id: str
    role: str


class MemberRemoved(Message, frozen=True, tag="projects.member_removed.v1"):
    project_id: str
    user_id: str


Event = (
    ProjectCreated
    | ProjectRenamed
    | ProjectDescriptionUpdated
    | ProjectArchived
    | ProjectRestored
    | MemberAdded
    | MemberRoleChanged
    | MemberRemoved
)

ALL: tuple[type[Message], ...] = (
    CreateProject,
    UpdateProject,
    ArchiveProject,
    RestoreProject,
    AddMember,
    ChangeMemberRole,
    RemoveMember,
    ProjectCreated,
    ProjectRenamed,
    ProjectDescriptionUpdated,
    ProjectArchived,
    ProjectRestored,
    MemberAdded,
    MemberRoleChanged,
    MemberRemoved,
)

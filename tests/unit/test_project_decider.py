"""The Project decider, given past events, when a command, then new events or a refusal.

Pure: no bus, no store. Events are compared on their payload, since the handler stamps the
envelope (ids, time, actor) later.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from contracts import common
from contracts.projects import (
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
from services.kernel.domain import DomainError
from services.projects.domain import (
    IdempotencyKeyReused,
    InvalidProject,
    LastOwner,
    MemberAlreadyAdded,
    MemberNotFound,
    Project,
    ProjectAlreadyArchived,
    ProjectAlreadyExists,
    ProjectIsArchived,
    ProjectNotArchived,
    ProjectNotFound,
    State,
    decide,
    evolve,
    fold,
)
from tests.scenario import Decider

PROJECT: Decider[State, Command, Event] = Decider(evolve=evolve, initial=None, decide=decide)
given = PROJECT.given

P = "p-1"
CREATED = ProjectCreated(project_id=P, name="Cats", description="Is it a cat?", causation_id="c-1")
ARCHIVED = ProjectArchived(project_id=P)


OWNER_ADDED = MemberAdded(project_id=P, user_id="ada", role="owner")


def create(name: str = "Cats", **fields: Any) -> CreateProject:
    return CreateProject(project_id=P, name=name, actor="ada", **fields)


def created(name: str = "Cats", description: str = "") -> tuple[ProjectCreated, MemberAdded]:
    """A project created by ada, who owns it from the start."""
    return ProjectCreated(project_id=P, name=name, description=description), OWNER_ADDED


# --- create ---------------------------------------------------------------------------------


def test_create_a_project() -> None:
    given().when(create(description="Is it a cat?")).then(*created(description="Is it a cat?"))


def test_create_strips_and_nfc_normalises_the_name() -> None:
    given().when(create("  Cafe\u0301 \n", description=" d ")).then(*created("Caf\u00e9", "d"))


@pytest.mark.parametrize("name", ["", "   ", "\t\n", " \u00a0 "])
def test_create_refuses_an_empty_name(name: str) -> None:
    given().when(create(name)).then_refused(InvalidProject, field="name")


def test_create_accepts_a_200_character_name_and_refuses_201() -> None:
    given().when(create(" " + "n" * 200 + " ")).then(*created("n" * 200))
    given().when(create("n" * 201)).then_refused(InvalidProject, field="name")


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "tab\there", "del\x7f"])
def test_create_refuses_control_characters_in_the_name(name: str) -> None:
    given().when(create(name)).then_refused(InvalidProject, field="name")


def test_create_refuses_a_description_over_5000_characters() -> None:
    given().when(create(description="d" * 5000)).then(*created(description="d" * 5000))
    given().when(create(description="d" * 5001)).then_refused(InvalidProject, field="description")


def test_create_refuses_an_unknown_task_type() -> None:
    given().when(create(task_type="segmentation")).then_refused(InvalidProject, field="task_type")


def test_create_accepts_a_detection_project() -> None:
    detection = ProjectCreated(project_id=P, name="Cats", description="", task_type="detection")
    given().when(create(task_type="detection")).then(detection, OWNER_ADDED)


def test_create_refuses_a_project_that_already_exists() -> None:
    given(CREATED).when(create(message_id="c-2")).then_refused(ProjectAlreadyExists)


def test_the_same_create_retried_decides_nothing() -> None:
    retry = create(" Cats ", description="Is it a cat?", message_id="c-1")
    given(CREATED).when(retry).then()


def test_the_same_idempotency_key_with_another_payload_is_refused() -> None:
    given(CREATED).when(create("Dogs", message_id="c-1")).then_refused(
        IdempotencyKeyReused, field="Idempotency-Key"
    )


# --- update ---------------------------------------------------------------------------------


def update(**fields: Any) -> UpdateProject:
    return UpdateProject(project_id=P, **fields)


def test_rename_only() -> None:
    given(CREATED).when(update(name=" Dogs ")).then(ProjectRenamed(project_id=P, name="Dogs"))


def test_describe_only() -> None:
    given(CREATED).when(update(description="")).then(
        ProjectDescriptionUpdated(project_id=P, description="")
    )


def test_rename_and_describe_are_two_events_in_order() -> None:
    given(CREATED).when(update(name="Dogs", description="Woof")).then(
        ProjectRenamed(project_id=P, name="Dogs"),
        ProjectDescriptionUpdated(project_id=P, description="Woof"),
    )


@pytest.mark.parametrize(
    "command", [update(), update(name="Cats", description="Is it a cat?"), update(name=" Cats")]
)
def test_an_update_that_changes_nothing_decides_nothing(command: UpdateProject) -> None:
    given(CREATED).when(command).then()


def test_update_refuses_a_missing_project() -> None:
    given().when(update(name="Dogs")).then_refused(ProjectNotFound)


def test_update_refuses_an_archived_project() -> None:
    given(CREATED, ARCHIVED).when(update(name="Dogs")).then_refused(ProjectIsArchived)


def test_update_refuses_an_invalid_name_or_description() -> None:
    given(CREATED).when(update(name=" ")).then_refused(InvalidProject, field="name")
    given(CREATED).when(update(description="d" * 5001)).then_refused(
        InvalidProject, field="description"
    )


# --- archive and restore --------------------------------------------------------------------


def test_archive_a_project() -> None:
    given(CREATED).when(ArchiveProject(project_id=P)).then(ProjectArchived(project_id=P))


def test_archive_refuses_an_archived_project() -> None:
    given(CREATED, ARCHIVED).when(ArchiveProject(project_id=P)).then_refused(ProjectAlreadyArchived)


def test_archive_refuses_a_missing_project() -> None:
    given().when(ArchiveProject(project_id=P)).then_refused(ProjectNotFound)


def test_restore_an_archived_project() -> None:
    given(CREATED, ARCHIVED).when(RestoreProject(project_id=P)).then(ProjectRestored(project_id=P))


def test_restore_refuses_a_project_that_is_not_archived() -> None:
    given(CREATED).when(RestoreProject(project_id=P)).then_refused(ProjectNotArchived)
    restored = ProjectRestored(project_id=P)
    given(CREATED, ARCHIVED, restored).when(RestoreProject(project_id=P)).then_refused(
        ProjectNotArchived
    )


def test_restore_refuses_a_missing_project() -> None:
    given().when(RestoreProject(project_id=P)).then_refused(ProjectNotFound)


# --- members --------------------------------------------------------------------------------

BOB_EDITOR = MemberAdded(project_id=P, user_id="bob", role="editor")


def test_the_creator_is_the_first_owner() -> None:
    project = given().when(create()).after()
    assert project is not None and project.members == {"ada": "owner"}


def test_add_a_member_with_a_role() -> None:
    given(CREATED, OWNER_ADDED).when(AddMember(project_id=P, user_id="bob", role="viewer")).then(
        MemberAdded(project_id=P, user_id="bob", role="viewer")
    )


def test_a_member_added_twice_is_refused() -> None:
    error = (
        given(CREATED, OWNER_ADDED, BOB_EDITOR)
        .when(AddMember(project_id=P, user_id="bob", role="viewer"))
        .then_refused(MemberAlreadyAdded, field="user_id")
    )
    assert error.code == common.CONFLICT


def test_change_a_members_role() -> None:
    given(CREATED, OWNER_ADDED, BOB_EDITOR).when(
        ChangeMemberRole(project_id=P, user_id="bob", role="owner")
    ).then(MemberRoleChanged(project_id=P, user_id="bob", role="owner"))


def test_changing_to_the_same_role_decides_nothing() -> None:
    given(CREATED, OWNER_ADDED, BOB_EDITOR).when(
        ChangeMemberRole(project_id=P, user_id="bob", role="editor")
    ).then()


def test_remove_a_member() -> None:
    scenario = given(CREATED, OWNER_ADDED, BOB_EDITOR).when(
        RemoveMember(project_id=P, user_id="bob")
    )
    scenario.then(MemberRemoved(project_id=P, user_id="bob"))
    after = scenario.after()
    assert after is not None and after.members == {"ada": "owner"}


@pytest.mark.parametrize(
    "command",
    [
        RemoveMember(project_id=P, user_id="ada"),
        ChangeMemberRole(project_id=P, user_id="ada", role="editor"),
        ChangeMemberRole(project_id=P, user_id="ada", role="viewer"),
    ],
    ids=["removed", "demoted to editor", "demoted to viewer"],
)
def test_the_last_owner_can_be_neither_removed_nor_demoted(command: Command) -> None:
    error = (
        given(CREATED, OWNER_ADDED, BOB_EDITOR)
        .when(command)
        .then_refused(LastOwner, field="user_id")
    )
    assert error.code == "LAST_OWNER"


def test_an_owner_may_leave_once_another_owner_exists() -> None:
    bob_owner = MemberRoleChanged(project_id=P, user_id="bob", role="owner")
    given(CREATED, OWNER_ADDED, BOB_EDITOR, bob_owner).when(
        RemoveMember(project_id=P, user_id="ada")
    ).then(MemberRemoved(project_id=P, user_id="ada"))
    given(CREATED, OWNER_ADDED, BOB_EDITOR, bob_owner).when(
        ChangeMemberRole(project_id=P, user_id="ada", role="viewer")
    ).then(MemberRoleChanged(project_id=P, user_id="ada", role="viewer"))


@pytest.mark.parametrize(
    "command",
    [
        RemoveMember(project_id=P, user_id="carol"),
        ChangeMemberRole(project_id=P, user_id="carol", role="editor"),
    ],
)
def test_an_unknown_member_is_not_found(command: Command) -> None:
    given(CREATED, OWNER_ADDED).when(command).then_refused(MemberNotFound, field="user_id")


def test_members_of_an_archived_project_can_still_be_managed() -> None:
    given(CREATED, OWNER_ADDED, BOB_EDITOR, ARCHIVED).when(
        RemoveMember(project_id=P, user_id="bob")
    ).then(MemberRemoved(project_id=P, user_id="bob"))


@pytest.mark.parametrize(
    "command",
    [
        AddMember(project_id=P, user_id="bob", role="viewer"),
        ChangeMemberRole(project_id=P, user_id="bob", role="viewer"),
        RemoveMember(project_id=P, user_id="bob"),
    ],
)
def test_members_of_a_missing_project_are_not_found(command: Command) -> None:
    given().when(command).then_refused(ProjectNotFound)


# --- evolve and fold ------------------------------------------------------------------------


def test_fold_replays_every_event_into_the_project() -> None:
    history: list[Event] = [
        CREATED,
        OWNER_ADDED,
        ProjectRenamed(project_id=P, name="Dogs"),
        ProjectDescriptionUpdated(project_id=P, description="Woof"),
        BOB_EDITOR,
        MemberRoleChanged(project_id=P, user_id="bob", role="viewer"),
        ARCHIVED,
    ]
    project = fold(history)
    assert project == Project(
        project_id=P,
        name="Dogs",
        description="Woof",
        task_type="classification",
        archived=True,
        created_by="c-1",
        members={"ada": "owner", "bob": "viewer"},
    )
    assert project is not None
    assert evolve(project, ProjectRestored(project_id=P)) == replace(project, archived=False)
    removed = evolve(project, MemberRemoved(project_id=P, user_id="bob"))
    assert removed is not None and removed.members == {"ada": "owner"}


def test_fold_of_no_events_is_no_project() -> None:
    assert fold([]) is None


def test_an_event_for_a_missing_project_cannot_be_replayed() -> None:
    with pytest.raises(ProjectNotFound):
        evolve(None, ProjectRenamed(project_id=P, name="Dogs"))


def test_decide_rejects_what_is_not_a_projects_command() -> None:
    with pytest.raises(TypeError):
        decide(None, ARCHIVED)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidProject, common.VALIDATION_ERROR),
        (IdempotencyKeyReused, common.VALIDATION_ERROR),
        (ProjectNotFound, common.NOT_FOUND),
        (ProjectAlreadyExists, common.CONFLICT),
        (ProjectIsArchived, common.CONFLICT),
        (ProjectAlreadyArchived, common.CONFLICT),
        (ProjectNotArchived, common.CONFLICT),
        (MemberAlreadyAdded, common.CONFLICT),
        (MemberNotFound, common.NOT_FOUND),
    ],
)
def test_each_refusal_answers_its_contract_code(error: type[DomainError], code: str) -> None:
    assert error.code == code

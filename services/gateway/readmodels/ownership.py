"""Which project a resource belongs to, and which projects a user may read: the queries the
access rules (``services.gateway.access``) ask, kept here with the other read-model queries.
Imports sqlmodel and the read models' tables; nothing of the routes."""

from __future__ import annotations

from typing import Any, Literal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from services.gateway.readmodels.datasets.tables import ImageRow, ImportRow, SplitRow
from services.gateway.readmodels.experiments import ExperimentRow
from services.gateway.readmodels.exports import ExportRow
from services.gateway.readmodels.members import member_projects
from services.gateway.readmodels.projects import ProjectRow
from services.gateway.readmodels.training.tables import EvaluationRow, RunRow

__all__ = ["Among", "Kind", "member_project_ids", "member_projects", "project_of"]

Kind = Literal[
    "project", "dataset", "image", "import", "split", "run", "evaluation", "export", "experiment"
]
#: A subquery of project ids, for a list's ``among=``.
Among = SelectOfScalar[str]


async def project_of(db: AsyncSession, kind: Kind, an_id: str) -> str | None:
    """The project ``an_id`` (a resource of ``kind``) belongs to; ``None`` when this read model
    knows no such resource. An image's id is its content: the project of an image held by
    one project only (ask with the project for the others)."""
    match kind:
        case "project" | "dataset":
            return an_id if await db.get(ProjectRow, an_id) is not None else None
        case "import":
            found = await db.get(ImportRow, an_id)
            return found.dataset_id if found else None
        case "split":
            split = await db.get(SplitRow, an_id)
            return split.dataset_id if split else None
        case "run":
            run = await db.get(RunRow, an_id)
            return run.project_id if run else None
        case "evaluation":
            evaluation = await db.get(EvaluationRow, an_id)
            return await project_of(db, "run", evaluation.run_id) if evaluation else None
        case "export":
            export = await db.get(ExportRow, an_id)
            return await project_of(db, "run", export.run_id) if export else None
        case "experiment":
            if (created := await db.get(ExperimentRow, an_id)) is not None:
                return created.project_id
            first = select(RunRow.project_id).where(_is(RunRow.experiment_id, an_id))
            return (await db.exec(first.order_by(col(RunRow.queued_seq)).limit(1))).first()
        case "image":
            held = select(ImageRow.dataset_id).where(_is(ImageRow.image_id, an_id)).limit(2)
            projects = list((await db.exec(held)).all())
            return projects[0] if len(projects) == 1 else None
    return None


async def member_project_ids(db: AsyncSession, *, user_id: str) -> set[str]:
    """The ids of the projects ``user_id`` is a member of."""
    return set((await db.exec(member_projects(user_id))).all())


def _is(column: Any, value: str) -> Any:
    return col(column) == value

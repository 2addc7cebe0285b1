"""The gateway's read models: one module per context, each holding its SQLite tables, the
projector that folds its stream into them (one method or match arm per event type), and the
queries that read them.

The rule: routes (``services.gateway.api``) and streams import queries from here, as
``from services.gateway.readmodels import training as read`` then ``read.run_detail(db, ...)``,
and never build SQL themselves; a query takes the session and keyword arguments, and answers a
missing row with ``None`` so that the route decides how to say it. Tables and columns are what
existing read-model files hold: a change to them is a rebuild, never a silent migration.

Imports sqlmodel/sqlalchemy, ``contracts`` and the kernel's projection plumbing; nothing of the
routes, and no other service.
"""

from services.gateway.readmodels import (
    audit,
    datasets,
    experiments,
    exports,
    members,
    projects,
    training,
)
from services.gateway.readmodels.audit import audit_projectors
from services.gateway.readmodels.datasets import DatasetsProjector
from services.gateway.readmodels.experiment_tasks import ExperimentTasks
from services.gateway.readmodels.experiments import ExperimentsProjector
from services.gateway.readmodels.exports import ExportsProjector
from services.gateway.readmodels.identity import IdentityProjector
from services.gateway.readmodels.members import MembersProjector
from services.gateway.readmodels.projects import ProjectsProjector
from services.gateway.readmodels.tasks import task_projectors
from services.gateway.readmodels.training import TrainingProjector
from services.kernel.projection import Projector

__all__ = [
    "DatasetsProjector",
    "ExperimentsProjector",
    "ExportsProjector",
    "IdentityProjector",
    "MembersProjector",
    "ProjectsProjector",
    "TrainingProjector",
    "audit",
    "datasets",
    "experiments",
    "exports",
    "members",
    "projectors",
    "projects",
    "training",
]


def projectors() -> list[Projector]:
    """A projector per context, as the gateway's projection runner runs them."""
    return [
        IdentityProjector(),
        ProjectsProjector(),
        MembersProjector(),
        DatasetsProjector(),
        TrainingProjector(),
        ExperimentsProjector(),
        ExportsProjector(),
        *audit_projectors(),
        *task_projectors(),
        ExperimentTasks(),
    ]

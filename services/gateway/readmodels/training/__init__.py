"""The gateway's read model of training: ``tables`` (runs, epochs, checkpoints, evaluations), the
``projector`` that folds the TRAINING stream into them, and the ``queries`` the routes read
them with."""

from services.gateway.readmodels.training.projector import STATUS_OF, TrainingProjector
from services.gateway.readmodels.training.queries import (
    Queue,
    experiment_runs,
    get_evaluation,
    get_run,
    latest_epochs,
    list_evaluations,
    list_runs,
    queue,
    queue_position,
    run_counts,
    run_detail,
)
from services.gateway.readmodels.training.tables import (
    CheckpointRow,
    EpochRow,
    EvaluationRow,
    RunRow,
)

__all__ = [
    "STATUS_OF",
    "CheckpointRow",
    "EpochRow",
    "EvaluationRow",
    "Queue",
    "RunRow",
    "TrainingProjector",
    "experiment_runs",
    "get_evaluation",
    "get_run",
    "latest_epochs",
    "list_evaluations",
    "list_runs",
    "queue",
    "queue_position",
    "run_counts",
    "run_detail",
]

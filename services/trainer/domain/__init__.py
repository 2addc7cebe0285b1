"""The trainer's pure deciders, one module per aggregate: ``run`` (queued → running → ended)
and ``evaluation`` (a checkpoint measured on a subset of the run's split).

The Run is the aggregate most of the service works with, so its names are re-exported here
(``domain.claim``, ``domain.Run``); the Evaluation is reached as ``domain.evaluation``. Pure:
the modules import ``contracts`` and the kernel's ``domain`` and ``jobs`` only.
"""

from services.trainer.domain import evaluation
from services.trainer.domain.run import (
    ACTIVE,
    AUTO_RESUME_LIMIT,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RESUMABLE,
    RUNNING,
    STOPPED,
    STOPPING,
    InvalidRun,
    Run,
    RunConflict,
    RunNotFound,
    State,
    claim,
    epoch,
    evolve,
    finish,
    hyperparameters,
    interrupt,
    queue,
    resume,
    stop,
)

__all__ = [
    "ACTIVE",
    "AUTO_RESUME_LIMIT",
    "COMPLETED",
    "FAILED",
    "INTERRUPTED",
    "QUEUED",
    "RESUMABLE",
    "RUNNING",
    "STOPPED",
    "STOPPING",
    "InvalidRun",
    "Run",
    "RunConflict",
    "RunNotFound",
    "State",
    "claim",
    "epoch",
    "evaluation",
    "evolve",
    "finish",
    "hyperparameters",
    "interrupt",
    "queue",
    "resume",
    "stop",
]

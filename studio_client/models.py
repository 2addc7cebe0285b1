"""What the studio answers, as typed values: msgspec Structs decoded from the envelope's
``data``. Fields the gateway adds later are ignored (msgspec's default), fields it may leave
out have defaults, so that a newer gateway never breaks an older client. Imports msgspec and
``studio_client.predictions`` (what a prediction answers, re-exported here).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from studio_client.predictions import DetectedBox, Prediction, Predictions

__all__ = [
    "Checkpoint",
    "DatasetSummary",
    "DetectedBox",
    "Epoch",
    "Evaluation",
    "Experiment",
    "Export",
    "Image",
    "ImagePage",
    "Import",
    "Page",
    "Prediction",
    "Predictions",
    "Project",
    "Promotion",
    "Run",
    "Session",
    "SocketMessage",
    "Split",
    "StreamEvent",
    "Task",
    "TaskPage",
    "Trial",
]

T = TypeVar("T")


class Model(msgspec.Struct, kw_only=True):
    """Every answer's base: keyword-only, unknown fields ignored."""


class Page(Model, Generic[T]):
    """One page of a list; ``limit``/``offset`` where the list pages by offset."""

    items: list[T]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class Session(Model):
    """A signed-in session (``POST /auth/token``): the bearer token and how to refresh it."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int = 0
    refresh_token: str | None = None
    refresh_expires_at: str | None = None
    user_id: str | None = None
    site_role: str | None = None
    tier: str | None = None
    session_id: str | None = None


class Project(Model):
    id: str
    name: str
    description: str = ""
    task_type: str = "classification"
    status: str = "active"  # active | archived
    version: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    created_by: str | None = None
    #: The caller's role in it (viewer, editor, owner; a site admin: admin).
    role: str | None = None
    #: True on a 202: stored, but the gateway's read model did not show it in time.
    pending: bool = False


class Import(Model):
    """An import job; ``report`` once it is over, ``progress`` (live) while it runs."""

    id: str
    project_id: str
    state: str  # running | importing | completed | failed | cancelled
    source_kind: str = ""
    source: str = ""
    format: str = "auto"
    files: int | None = None
    classes: list[str] = []
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, Any] | None = None
    task_id: str | None = None
    check_url: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")


class Image(Model):
    id: str
    filename: str
    label: str | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    format: str | None = None
    split_hint: str | None = None
    boxes: list[Any] | None = None
    import_id: str | None = None
    #: The image's subset in the split the page was filtered by.
    subset: str | None = None


class ImagePage(Model):
    """A page of images; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[Image]
    total: int | None = None
    next_cursor: str | None = None


class Split(Model):
    id: str
    project_id: str
    name: str
    strategy: str = "stratified"
    ratios: dict[str, float] = {}
    seed: int = 0
    images: int = 0
    groups: int = 0
    totals: dict[str, int] = {}
    counts: dict[str, dict[str, int]] = {}
    recipe_hash: str | None = None
    created_at: str | None = None
    deviations: list[dict[str, Any]] = []


class DatasetSummary(Model):
    """A project's dataset: counts, class histogram, image sizes, latest imports, splits."""

    project_id: str
    images: int = 0
    bytes: int = 0
    classes: dict[str, int] = {}
    width: dict[str, Any] = {}
    height: dict[str, Any] = {}
    imports: list[Import] = []
    splits: list[Split] = []


class Epoch(Model):
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    learning_rate: float | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    gpu_memory_peak: int | None = None
    #: A detector's loss components and validation mAP@[.5:.95] / mAP@.5; empty and None for
    #: a classifier (whose ``val_accuracy`` is its figure; a detector's is 0).
    losses: dict[str, float] = {}
    val_map: float | None = None
    val_map50: float | None = None


class Checkpoint(Model):
    kind: str
    epoch: int
    sha256: str
    size: int
    object_name: str | None = None


class Run(Model):
    """A training run; ``history`` and ``checkpoints`` when read one by one."""

    id: str
    project_id: str
    split_id: str
    status: str  # queued | running | stopping | stopped | completed | failed | interrupted
    experiment_id: str | None = None
    hyperparameters: dict[str, Any] = {}
    classes: list[str] = []
    train_images: int | None = None
    val_images: int | None = None
    epochs: int | None = None
    epochs_done: int = 0
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    device: str | None = None
    instance: str | None = None
    attempt: int | None = None
    message: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    #: Its place in the queue, while queued (on a submit's answer).
    position: int | None = None
    history: list[Epoch] = []
    checkpoints: list[Checkpoint] = []
    task_id: str | None = None
    check_url: str | None = None
    #: A detector's best validation mAP@[.5:.95] (its best epoch's); None for a classifier.
    best_val_map: float | None = None

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "stopped")


class Evaluation(Model):
    id: str
    run_id: str
    status: str  # running | completed | failed
    checkpoint: str = "best"
    checkpoint_epoch: int | None = None
    subset: str = "test"
    images: int | None = None
    metrics: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    task_id: str | None = None
    check_url: str | None = None


class Export(Model):
    id: str
    run_id: str
    status: str  # running | completed | failed
    format: str = "onnx"
    checkpoint: str = "best"
    checkpoint_epoch: int | None = None
    checkpoint_sha256: str | None = None
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    parity: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    bundle_size: int | None = None
    bundle_sha256: str | None = None
    error: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    task_id: str | None = None
    check_url: str | None = None


class Task(Model):
    """Any background job (import, training, evaluation, export) as one resource."""

    task_id: str
    kind: str  # import | training | evaluation | export | experiment
    status: str  # pending | processing | completed | failed | cancelled
    progress: float | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    check_url: str | None = None
    project_id: str | None = None
    #: The job's own state word (``importing``, ``queued``, ``stopping`` …), finer than status.
    state: str | None = None
    updated_at: str | None = None
    created_by: str | None = None

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


TaskPage = Page[Task]


class StreamEvent(Model):
    """One Server-Sent Event of a live stream: its name (``epoch_end``, ``progress``,
    ``complete`` ...), its decoded data, and its id (a stored event's sequence; ``None`` for
    live progress, which is not stored)."""

    event: str
    data: Any = None
    id: int | None = None


class Trial(Model):
    """One trial of a search: a run with the hyperparameters the search chose for it."""

    trial: int
    state: str = "running"  # queued | running | completed | pruned | failed | stopped
    run_id: str | None = None
    params: dict[str, Any] = {}
    #: The objectives' values once it completed (metric -> value).
    values: dict[str, float] = {}
    #: Its run's latest metrics (val_accuracy, val_loss, latency_ms, params ...).
    metrics: dict[str, Any] = {}
    epoch: int | None = None
    message: str | None = None
    pruned_epoch: int | None = None
    pruned_value: float | None = None
    error: dict[str, Any] | None = None
    #: The evaluation and export it was promoted to, once promoted.
    promoted: dict[str, Any] | None = None
    run_status: str | None = None
    epochs_done: int = 0
    best_val_accuracy: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: A detector trial's best validation mAP@[.5:.95] (its run's); None for a classifier.
    best_val_map: float | None = None


class Experiment(Model):
    """A search over models and hyperparameters; ``trials``, ``front`` (trial numbers on the
    Pareto front, or the best one for a single objective), ``best`` (metric -> trial) and
    ``importances`` (hyperparameter -> importance) when read one by one."""

    id: str = ""
    experiment_id: str = ""
    project_id: str | None = None
    split_id: str | None = None
    name: str = ""
    status: str = "running"  # running | stopped | completed
    architecture_type: str = "any"
    search_config: dict[str, Any] = {}
    max_trials: int | None = None
    objectives: list[dict[str, Any]] = []
    budget: dict[str, Any] = {}
    pruning: dict[str, Any] = {}
    seed: int | None = None
    trials: list[Trial] = []
    front: list[int] = []
    best: dict[str, int] = {}
    importances: dict[str, float] = {}
    trials_started: int = 0
    trials_finished: int = 0
    #: Why it ended: max_trials, wall_time, stopped_all.
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    created_by: str | None = None
    task_id: str | None = None
    check_url: str | None = None
    #: True on a 202: stored, but the gateway's read model did not show it in time.
    pending: bool = False

    def __post_init__(self) -> None:
        # The gateway names it ``id`` in some answers and ``experiment_id`` in others.
        self.id = self.id or self.experiment_id
        self.experiment_id = self.experiment_id or self.id

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "stopped")

    def trial(self, number: int) -> Trial | None:
        return next((t for t in self.trials if t.trial == number), None)


class Promotion(Model):
    """A trial being promoted: its run evaluated on the test subset and exported."""

    experiment_id: str = ""
    trial: int | None = None
    run_id: str | None = None
    evaluation_id: str | None = None
    export_id: str | None = None
    format: str = "onnx"
    status: str | None = None
    task_id: str | None = None
    check_url: str | None = None


class SocketMessage(Model):
    """One frame of an experiment's WebSocket: ``snapshot`` first, then ``trial_started``,
    ``epoch_end``, ``trial_pruned``, ``trial_completed``, ``front_updated``, ``complete`` ..."""

    type: str
    payload: dict[str, Any] = {}

"""The training context: the Run aggregate (queued → running → completed/stopped/failed/…)."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec

from contracts import experiments as x
from contracts.common import Id, JobEvents, Keyword
from contracts.envelope import Message

CONTEXT: Final = "training"
STREAM: Final = "TRAINING"
EVENTS: Final = "evt.training.>"

MODELS: Final = (
    "smallcnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)
#: The detectors a detection project's run may train (``services.vision.detectors`` builds
#: them; the same names, held here for the services that load no torch).
DETECTORS: Final = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn_v2",
    "ssdlite320_mobilenet_v3_large",
    "fcos_resnet50_fpn",
)
OPTIMIZERS: Final = ("sgd", "adamw")
SCHEDULES: Final = ("cosine", "step", "onecycle", "none")
AUGMENTATIONS: Final = ("none", "light", "standard")
CLASS_WEIGHTS: Final = ("none", "auto")
MIXED_PRECISION: Final = ("auto", "on", "off")
#: Every model but smallcnn downsamples 32 times: runs and search spaces below it are refused.
TORCHVISION_MIN_SIZE: Final = 32
#: Bounds of ``Hyperparameters``' strings, checked where a run is submitted.
MODEL_MAX: Final = 64
#: A weights path: a file name of at most 255 bytes in a path of at most this many characters.
PRETRAINED_MAX: Final = 1024
#: The largest signed 64-bit integer: the wire's limit on a seed, not a choice of the domain.
INT64_MAX: Final = 2**63 - 1

#: The bounds of each hyperparameter, written once. ``HyperparametersIn`` (what ``StartRun``
#: carries), the gateway's request model (so its OpenAPI schema) and the trainer's checks are all
#: built from this table and ``HYPERPARAMETER_CHOICES``. ``Hyperparameters`` itself stays
#: unbounded: ``RunQueued`` stores it, and its old events must decode whatever these become.
HYPERPARAMETER_BOUNDS: Final[Mapping[str, msgspec.Meta]] = MappingProxyType(
    {
        "model": msgspec.Meta(max_length=MODEL_MAX),  # the trainer checks it against the zoo
        "epochs": msgspec.Meta(ge=1, le=1000),
        "batch_size": msgspec.Meta(ge=1, le=4096),
        "learning_rate": msgspec.Meta(gt=0, le=10),
        "weight_decay": msgspec.Meta(ge=0, le=1),
        "image_size": msgspec.Meta(ge=16, le=1024),
        "early_stopping_patience": msgspec.Meta(ge=0, le=1000),
        "seed": msgspec.Meta(ge=0, le=INT64_MAX),
        "workers": msgspec.Meta(ge=0, le=32),
        "pretrained": msgspec.Meta(max_length=PRETRAINED_MAX),
    }
)
#: The words a hyperparameter may be, where it is one of a few.
HYPERPARAMETER_CHOICES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "augmentation": AUGMENTATIONS,
        "class_weights": CLASS_WEIGHTS,
        "mixed_precision": MIXED_PRECISION,
    }
)
#: The keywords of ``msgspec.Meta`` that bound a number or a length, as pydantic's ``Field``
#: spells them too.
_BOUND_KEYWORDS: Final = ("gt", "ge", "lt", "le", "min_length", "max_length")


def event_subject(run_id: str) -> str:
    return f"evt.training.{run_id}"


def progress_subject(run_id: str) -> str:
    """Core NATS (not stored): batch progress of a running run, a few times a second."""
    return f"live.training.{run_id}"


#: The experiment's command subjects belong to this context (its events share the stream).
ExperimentSubjects = x.ExperimentSubjects


class Subjects:
    START_RUN: Final = "cmd.training.start_run"
    STOP_RUN: Final = "cmd.training.stop_run"
    RESUME_RUN: Final = "cmd.training.resume_run"


class Hyperparameters(msgspec.Struct, frozen=True, kw_only=True):
    model: str = "smallcnn"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    image_size: int = 64
    augmentation: str = "light"
    #: "none", or "auto": inverse class frequency from the training subset.
    class_weights: str = "none"
    #: Epochs without a better validation accuracy before stopping; 0 never stops early.
    early_stopping_patience: int = 0
    seed: int = 0
    #: "auto" uses AMP on CUDA only; "on" / "off" force it (on is ignored on CPU).
    mixed_precision: str = "auto"
    workers: int = 0
    #: A weights file on the trainer's machine to start from; none starts from scratch.
    pretrained: str | None = None


def hyperparameter_bounds(name: str) -> dict[str, Any]:
    """The bounds of hyperparameter ``name`` as keywords (``ge``, ``gt``, ``le``,
    ``max_length``…): what a checker other than msgspec (pydantic's ``Field``) takes."""
    meta = HYPERPARAMETER_BOUNDS.get(name)
    if meta is None:
        return {}
    return {k: getattr(meta, k) for k in _BOUND_KEYWORDS if getattr(meta, k) is not None}


def _bounded(field: msgspec.structs.FieldInfo) -> Any:
    """The type of a ``Hyperparameters`` field narrowed to its choices or bounds."""
    if field.name in HYPERPARAMETER_CHOICES:
        return Literal[HYPERPARAMETER_CHOICES[field.name]]  # Literal of a tuple: one of its items
    meta = HYPERPARAMETER_BOUNDS.get(field.name)
    if meta is None:
        return field.type
    if field.default is None:  # ``X | None``: the bound is on X, None stays allowed
        (inner,) = (t for t in typing.get_args(field.type) if t is not type(None))
        return Annotated[inner, meta] | None
    return Annotated[field.type, meta]


def _hyperparameters_in() -> type[Hyperparameters]:
    """``Hyperparameters`` with every bound and choice in its type, built from the tables so
    that nothing is written twice; a subclass, so it goes where a ``Hyperparameters`` goes."""
    fields = [(f.name, _bounded(f), f.default) for f in msgspec.structs.fields(Hyperparameters)]
    cls: Any = msgspec.defstruct(
        "HyperparametersIn",
        fields,
        bases=(Hyperparameters,),
        module=__name__,
        frozen=True,
        kw_only=True,
    )
    cls.__doc__ = "Hyperparameters as a run is submitted: every value within its bounds."
    return cls


if TYPE_CHECKING:  # built at run time from the tables; to a type checker, a Hyperparameters
    HyperparametersIn = Hyperparameters
else:
    HyperparametersIn = _hyperparameters_in()


# --- commands -------------------------------------------------------------------------------


#: The most devices one run may ask for (a trainer has at most this many as well).
MAX_DEVICES: Final = 64


class StartRun(Message, frozen=True, tag="training.start_run.v1"):
    run_id: Id
    experiment_id: Id
    project_id: Id
    split_id: Id
    #: Bounded (a command may narrow); ``RunQueued`` stores the unbounded ``Hyperparameters``,
    #: whose old events must decode.
    hyperparameters: HyperparametersIn
    #: "queue" waits for a free device; "reject" refuses when every device is busy.
    if_busy: Keyword = "queue"
    #: Devices the run trains on at once (DistributedDataParallel, one process each), all of
    #: one trainer; ``hyperparameters.batch_size`` is the global batch, split between them.
    devices: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEVICES)] = 1


class StopRun(Message, frozen=True, tag="training.stop_run.v1"):
    run_id: Id


class ResumeRun(Message, frozen=True, tag="training.resume_run.v1"):
    run_id: Id
    #: Raise the number of epochs (the schedule is re-planned); None keeps it.
    epochs: int | None = None


# --- events ---------------------------------------------------------------------------------


class RunQueued(Message, frozen=True, tag="training.run_queued.v1"):
    run_id: str
    experiment_id: str
    project_id: str
    split_id: str
    hyperparameters: Hyperparameters
    classes: list[str]
    train_images: int
    val_images: int
    #: Devices the run trains on at once; old events (before several devices) mean one.
    devices: int = 1


class RunStarted(Message, frozen=True, tag="training.run_started.v1"):
    run_id: str
    instance: str
    device: str
    lease: str
    attempt: int
    start_epoch: int


class EpochCompleted(Message, frozen=True, tag="training.epoch_completed.v1"):
    run_id: str
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    images_per_second: float
    gpu_memory_peak: int | None = None
    #: A detector's loss components over the epoch's training images (e.g. ``loss_classifier``,
    #: ``loss_box_reg``); empty for a classifier, whose ``train_loss`` is its only loss.
    losses: dict[str, float] = {}
    #: A detector's validation mAP@[.5:.95] and mAP@.5 (COCO's); None for a classifier. A
    #: detector's ``val_accuracy`` is 0.0 and its ``val_loss`` is its validation loss.
    val_map: float | None = None
    val_map50: float | None = None


class CheckpointSaved(Message, frozen=True, tag="training.checkpoint_saved.v1"):
    run_id: str
    epoch: int
    kind: str  # "last" | "best"
    sha256: str
    size: int
    #: Its name in the artifacts Object Store bucket, for trainers on other machines.
    object_name: str


class RunStopRequested(Message, frozen=True, tag="training.run_stop_requested.v1"):
    run_id: str


class RunStopped(Message, frozen=True, tag="training.run_stopped.v1"):
    run_id: str
    #: The last epoch whose checkpoint is kept: a resume continues after it.
    epoch: int


class RunCompleted(Message, frozen=True, tag="training.run_completed.v1"):
    run_id: str
    epochs: int
    best_epoch: int
    best_val_accuracy: float
    early_stopped: bool = False
    #: The model's parameters (sum of numel), measured at the end of the run.
    params: int | None = None
    #: Median forward time at batch 1 on the run's device (eval mode, after warm-up).
    latency_ms: float | None = None
    #: A detector's best validation mAP@[.5:.95] (its best epoch's); None for a classifier.
    best_val_map: float | None = None


class RunFailed(Message, frozen=True, tag="training.run_failed.v1"):
    run_id: str
    code: str
    message: str


class RunInterrupted(Message, frozen=True, tag="training.run_interrupted.v1"):
    """Its trainer vanished (its device lease expired); resumable from its last checkpoint."""

    run_id: str
    reason: str


class RunResumed(Message, frozen=True, tag="training.run_resumed.v1"):
    """Back in the queue, to continue after its last checkpoint, up to ``epochs``."""

    run_id: str
    epochs: int
    #: True when the trainer put it back by itself after a crash interrupted it.
    automatic: bool = False


# --- evaluation: an aggregate of its own in the training context ------------------------------


class EvaluationSubjects:
    EVALUATE_RUN: Final = "cmd.training.evaluate_run"


def evaluation_subject(evaluation_id: str) -> str:
    return f"evt.training.{evaluation_id}"


class EvaluateRun(Message, frozen=True, tag="training.evaluate_run.v1"):
    evaluation_id: Id
    run_id: Id
    checkpoint: Keyword = "best"  # "best" | "last"
    subset: Keyword = "test"  # "train" | "val" | "test"


class EvaluationStarted(Message, frozen=True, tag="training.evaluation_started.v1"):
    evaluation_id: str
    run_id: str
    checkpoint: str
    subset: str
    images: int
    checkpoint_epoch: int
    instance: str = ""


class EvaluationCompleted(Message, frozen=True, tag="training.evaluation_completed.v1"):
    """``metrics``: accuracy, top-5, per class, macro/weighted, confusion matrix, ECE and the
    misclassified images; ``predictions``: [image id, true index, predicted index, confidence]
    for every image, so any confusion-matrix cell can be listed."""

    evaluation_id: str
    run_id: str
    metrics: dict[str, Any]
    predictions: list[tuple[str, int, int, float]]


class EvaluationFailed(Message, frozen=True, tag="training.evaluation_failed.v1"):
    evaluation_id: str
    run_id: str
    code: str
    message: str


Command = StartRun | StopRun | ResumeRun
Event = (
    RunQueued
    | RunStarted
    | EpochCompleted
    | CheckpointSaved
    | RunStopRequested
    | RunStopped
    | RunCompleted
    | RunFailed
    | RunInterrupted
    | RunResumed
    | EvaluationStarted
    | EvaluationCompleted
    | EvaluationFailed
    | x.Event
)

ALL: tuple[type[Message], ...] = (
    StartRun,
    StopRun,
    ResumeRun,
    RunQueued,
    RunStarted,
    EpochCompleted,
    CheckpointSaved,
    RunStopRequested,
    RunStopped,
    RunCompleted,
    RunFailed,
    RunInterrupted,
    RunResumed,
    EvaluateRun,
    EvaluationStarted,
    EvaluationCompleted,
    EvaluationFailed,
    *x.ALL,
)

#: The Object Store bucket of the runs' checkpoint files: the trainer writes, the exporter reads.
ARTIFACTS_BUCKET: Final = "studio_artifacts"


def run_objects(run_id: str) -> str:
    """The prefix of every object of a run in ``ARTIFACTS_BUCKET``."""
    return f"runs/{run_id}/"


def checkpoint_object(run_id: str, file_name: str) -> str:
    """The object name a run's checkpoint file is stored under. ``CheckpointSaved.object_name``
    records it, so a reader takes it from there rather than calling this."""
    return run_objects(run_id) + file_name


#: The evaluation as a background job: its events, for the job decider and job tables.
EVALUATION_JOB: Final = JobEvents(
    "evaluation",
    "evaluation_id",
    "run_id",
    EvaluationStarted,
    EvaluationCompleted,
    EvaluationFailed,
)

"""The datasets context: one Dataset aggregate per project: its images, imports and splits."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from contracts.common import PATH_MAX, Id, JobEvents, Keyword
from contracts.dataset_values import (  # the values its messages carry, all re-exported
    REPORT_LIST_BYTES,  # noqa: F401
    REPORT_LISTED,  # noqa: F401
    Box,
    DuplicateRecord,  # noqa: F401
    FileProblem,  # noqa: F401
    ImageRecord,
    ImportReport,
    SplitDeviation,
)
from contracts.envelope import Message

CONTEXT: Final = "datasets"
STREAM: Final = "DATASETS"
EVENTS: Final = "evt.datasets.>"

LABEL_MAX: Final = 200
SPLIT_NAME_MAX: Final = 100
SUBSETS: Final = ("train", "val", "test")
Label = Annotated[str, msgspec.Meta(max_length=LABEL_MAX)]
SplitName = Annotated[str, msgspec.Meta(max_length=SPLIT_NAME_MAX)]
FilePath = Annotated[str, msgspec.Meta(max_length=PATH_MAX)]


def event_subject(dataset_id: str) -> str:
    """Every event of one dataset (its id is its project's id)."""
    return f"evt.datasets.{dataset_id}"


def progress_subject(import_id: str) -> str:
    """Core NATS (not stored): an import's live progress, a few times a second."""
    return f"live.datasets.import.{import_id}"


#: Object Store bucket through which the gateway hands an uploaded ZIP to the datasets service:
#: the gateway puts it, the datasets service fetches and deletes it (and sweeps what a gateway
#: that crashed between its put and its command left there).
UPLOADS_BUCKET: Final = "studio_uploads"


def upload_object(upload_id: str) -> str:
    """The object name of one uploaded archive in ``UPLOADS_BUCKET``."""
    return f"upload/{upload_id}.zip"


class Subjects:
    START_IMPORT: Final = "cmd.datasets.start_import"
    CANCEL_IMPORT: Final = "cmd.datasets.cancel_import"
    RELABEL_IMAGE: Final = "cmd.datasets.relabel_image"
    DELETE_IMAGE: Final = "cmd.datasets.delete_image"
    CREATE_SPLIT: Final = "cmd.datasets.create_split"
    DELETE_SPLIT: Final = "cmd.datasets.delete_split"
    HEALTH: Final = "qry.datasets.health"
    #: A page of a split's subset: each image's id, label and blob (``GetSubset``).
    SUBSET: Final = "qry.datasets.subset"
    #: A piece of an image's or a thumbnail's bytes (``GetBlob``).
    BLOB: Final = "qry.datasets.blob"
    #: Lists or deletes the stored files no event names (``CollectGarbage``; ``studio gc``).
    COLLECT_GARBAGE: Final = "cmd.datasets.collect_garbage"


#: Items in one ``SubsetPage``: an item is at most ~1 KB of JSON (a 64-char id twice and a
#: label of at most 200 characters), so a page stays far below NATS's 8 MB payload limit.
SUBSET_PAGE_MAX: Final = 1000
#: Encoded bytes of one ``SubsetPage`` at most (estimated, on the safe side): a detection image
#: may carry hundreds of boxes, so a page of them ends early (its ``next`` says where it ended).
SUBSET_PAGE_BYTES: Final = 2 * 1024 * 1024
#: Bytes of a file in one ``BlobChunk`` (base64 in JSON: 4/3 of it on the wire).
BLOB_CHUNK_MAX: Final = 1024 * 1024
Subset = Literal["train", "val", "test"]
BlobKind = Literal["image", "thumbnail"]


# --- commands -------------------------------------------------------------------------------


class StartImport(Message, frozen=True, tag="datasets.start_import.v1"):
    """Import files into a project's dataset from a server path or an uploaded ZIP."""

    dataset_id: Id
    import_id: Id
    source_kind: Keyword  # "local" | "upload"
    source: FilePath  # the path as the user gave it, or the uploaded file's name
    format: Keyword = "auto"
    #: For an upload from an older gateway: the archive it streamed into a shared workspace.
    staged_path: FilePath | None = None
    #: For an upload: the archive's object in ``UPLOADS_BUCKET`` (``upload_object``), which the
    #: datasets service fetches and then deletes.
    upload_object: FilePath | None = None


class CancelImport(Message, frozen=True, tag="datasets.cancel_import.v1"):
    dataset_id: Id
    import_id: Id


class RelabelImage(Message, frozen=True, tag="datasets.relabel_image.v1"):
    dataset_id: Id
    image_id: Id
    label: Label


class DeleteImage(Message, frozen=True, tag="datasets.delete_image.v1"):
    dataset_id: Id
    image_id: Id


class CreateSplit(Message, frozen=True, tag="datasets.create_split.v1"):
    dataset_id: Id
    split_id: Id
    name: SplitName
    train: float
    val: float
    test: float
    strategy: Keyword = "stratified"
    seed: int = 0


class DeleteSplit(Message, frozen=True, tag="datasets.delete_split.v1"):
    """Forget a split; the gateway sends it only for a split no run uses."""

    dataset_id: Id
    split_id: Id


class GetHealth(Message, frozen=True, tag="datasets.get_health.v1"):
    dataset_id: Id


class HealthReport(Message, frozen=True, tag="datasets.health_report.v1"):
    dataset_id: str
    report: dict[str, Any]


class GetSubset(Message, frozen=True, tag="datasets.get_subset.v1"):
    """One page of a split's subset, in image id order: the images after ``after`` (the
    previous page's ``next``; "" for the first page). Deleted images are left out. Answered from
    the dataset's stored events, so a split made a moment ago is seen at once; an unknown (or
    deleted) split is refused NOT_FOUND."""

    dataset_id: Id
    split_id: Id
    subset: Subset
    after: Annotated[str, msgspec.Meta(max_length=128)] = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=SUBSET_PAGE_MAX)] = SUBSET_PAGE_MAX


class SubsetItem(msgspec.Struct, frozen=True):
    """An image of a subset: its label now, and ``blob``, the content address (sha256) of its
    bytes in the datasets service's blob store. ``boxes``: its bounding boxes as imported
    (normalised ``Box``es; empty for a classification image and for a detection negative)."""

    image_id: str
    label: str
    blob: str
    boxes: list[Box] = []


class SubsetPage(Message, frozen=True, tag="datasets.subset_page.v1"):
    """``next``: the ``after`` of the following page; None on the last page."""

    dataset_id: str
    split_id: str
    subset: str
    items: list[SubsetItem]
    next: str | None = None


class GetBlob(Message, frozen=True, tag="datasets.get_blob.v1"):
    """Up to ``limit`` bytes from ``offset`` of an image of the dataset (``kind="image"``: the
    original file; ``"thumbnail"``: its JPEG thumbnail). An image the dataset does not hold, or
    whose file is missing, is refused NOT_FOUND."""

    dataset_id: Id
    image_id: Id
    kind: BlobKind = "image"
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=BLOB_CHUNK_MAX)] = BLOB_CHUNK_MAX


class BlobChunk(Message, frozen=True, tag="datasets.blob_chunk.v1"):
    """``data``: the bytes from ``offset``; ``size``: the whole file's, so a reader knows when it
    has it all (``offset + len(data) == size``)."""

    dataset_id: str
    image_id: str
    kind: str
    offset: int
    size: int
    data: bytes


class CollectGarbage(Message, frozen=True, tag="datasets.collect_garbage.v1"):
    """The stored images and thumbnails that no event names (what failed, cancelled or
    interrupted imports left), listed, or deleted with ``delete``. Files younger than
    ``grace_s`` seconds are kept (``None``: the service's ``STUDIO_GC_GRACE_S``)."""

    delete: bool = False
    grace_s: Annotated[float, msgspec.Meta(ge=0)] | None = None


class GarbageReport(Message, frozen=True, tag="datasets.garbage_report.v1"):
    """What a collection found: ``files`` originals and ``thumbnails`` no event names, of
    ``bytes`` in all (``sample``: some of their ids); ``deleted``: whether they are gone.
    ``recent``: such files kept because they are younger than the grace period; ``deferred``:
    why nothing (more) was deleted, e.g. imports running; ``named``: images events name."""

    files: int
    thumbnails: int
    bytes: int
    deleted: bool
    sample: list[str] = []
    recent: int = 0
    deferred: str = ""
    named: int = 0


# --- events ---------------------------------------------------------------------------------


class ImportStarted(Message, frozen=True, tag="datasets.import_started.v1"):
    dataset_id: str
    import_id: str
    source_kind: str
    source: str
    format: str
    #: The service instance running it: only that instance may declare it interrupted.
    instance: str = ""


class ImportValidated(Message, frozen=True, tag="datasets.import_validated.v1"):
    """The source was read and understood: ``files`` images will be decoded."""

    dataset_id: str
    import_id: str
    format: str
    files: int
    classes: list[str] = []


class ImagesAdded(Message, frozen=True, tag="datasets.images_added.v1"):
    """A batch of an import's images; always stored together with its ``ImportCompleted``."""

    dataset_id: str
    import_id: str
    images: list[ImageRecord]


class ImportCompleted(Message, frozen=True, tag="datasets.import_completed.v1"):
    dataset_id: str
    import_id: str
    report: ImportReport


class ImportFailed(Message, frozen=True, tag="datasets.import_failed.v1"):
    """Nothing of the import was kept. ``status`` is the HTTP status the error deserves."""

    dataset_id: str
    import_id: str
    code: str
    message: str
    status: int = 422
    field: str | None = None


class ImageRelabeled(Message, frozen=True, tag="datasets.image_relabeled.v1"):
    dataset_id: str
    image_id: str
    label: str
    previous: str


class ImageDeleted(Message, frozen=True, tag="datasets.image_deleted.v1"):
    dataset_id: str
    image_id: str


class SplitCreated(Message, frozen=True, tag="datasets.split_created.v1"):
    """A named split; its assignment follows in ``SplitAssigned`` parts stored atomically with it.

    ``counts`` is subset → label → images; ``recipe_hash`` is the sha256 over the sorted
    ``image_id:subset`` lines, so two machines can check they computed the same split.
    """

    dataset_id: str
    split_id: str
    name: str
    strategy: str
    ratios: dict[str, float]
    seed: int
    images: int
    groups: int
    counts: dict[str, dict[str, int]]
    recipe_hash: str
    #: Where near-duplicate groups (never split) kept a class from its share: empty when every
    #: class is within two images of its share of every subset.
    deviations: list[SplitDeviation] = []


class SplitAssigned(Message, frozen=True, tag="datasets.split_assigned.v1"):
    dataset_id: str
    split_id: str
    part: int
    assignment: dict[str, str]


class SplitDeleted(Message, frozen=True, tag="datasets.split_deleted.v1"):
    """The split is gone with its assignment; its name may be given to a new split."""

    dataset_id: str
    split_id: str


Command = StartImport | CancelImport | RelabelImage | DeleteImage | CreateSplit | DeleteSplit
Event = (
    ImportStarted
    | ImportValidated
    | ImagesAdded
    | ImportCompleted
    | ImportFailed
    | ImageRelabeled
    | ImageDeleted
    | SplitCreated
    | SplitAssigned
    | SplitDeleted
)

ALL: tuple[type[Message], ...] = (
    StartImport,
    CancelImport,
    RelabelImage,
    DeleteImage,
    CreateSplit,
    DeleteSplit,
    GetHealth,
    HealthReport,
    GetSubset,
    SubsetPage,
    GetBlob,
    BlobChunk,
    CollectGarbage,
    GarbageReport,
    ImportStarted,
    ImportValidated,
    ImagesAdded,
    ImportCompleted,
    ImportFailed,
    ImageRelabeled,
    ImageDeleted,
    SplitCreated,
    SplitAssigned,
    SplitDeleted,
)

#: The import as a background job: its events, for the job decider and job tables.
IMPORT_JOB: Final = JobEvents(
    "import", "import_id", "dataset_id", ImportStarted, ImportCompleted, ImportFailed
)

"""The gateway's read model of datasets: ``tables`` (images, imports, splits), the ``projector``
that folds the DATASETS stream into them, and the ``queries`` the routes read them with."""

from services.gateway.readmodels.datasets.projector import DatasetsProjector
from services.gateway.readmodels.datasets.queries import (
    dataset_summary,
    get_image,
    get_import,
    list_images,
    list_splits,
    split_detail,
    subsets_of,
)
from services.gateway.readmodels.datasets.tables import (
    ImageRow,
    ImportRow,
    SplitDeviationRow,
    SplitMember,
    SplitRow,
)

__all__ = [
    "DatasetsProjector",
    "ImageRow",
    "ImportRow",
    "SplitDeviationRow",
    "SplitMember",
    "SplitRow",
    "dataset_summary",
    "get_image",
    "get_import",
    "list_images",
    "list_splits",
    "split_detail",
    "subsets_of",
]

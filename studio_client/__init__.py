"""The studio's Python client: ``StudioClient`` (blocking) and ``AsyncStudioClient`` (asyncio),
with typed results (``studio_client.models``) and typed errors (``studio_client.errors``).

    from studio_client import StudioClient

    with StudioClient("http://127.0.0.1:8000", api_key="sk_…") as studio:
        run = studio.runs.create(project_id, split_id, model="resnet18", epochs=10)
        for event in studio.runs.follow(run.id):
            if event.event == "epoch_end":
                print(event.data["epoch"], event.data["val_accuracy"])

Depends on httpx and msgspec only: it imports nothing of the studio's services or contracts.
"""

from studio_client.aio import AsyncStudioClient
from studio_client.errors import (
    ChecksumMismatch,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    StreamEnded,
    StudioError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from studio_client.sync import StudioClient
from studio_client.transport import RetryPolicy

__all__ = [
    "AsyncStudioClient",
    "ChecksumMismatch",
    "Conflict",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "StreamEnded",
    "StudioClient",
    "StudioError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]

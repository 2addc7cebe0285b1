"""Event stream definitions and their idempotent creation on JetStream.

Creating a stream rides out a leader election or a node restart (``services.kernel.transient``):
a service starting while one node of a cluster is down waits for it, then exits if it never
comes, rather than crashing at its first call.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from services.kernel.transient import retry_transient

#: A retried append within this window is recognised by its Nats-Msg-Id alone.
DUPLICATE_WINDOW_S = 120.0
#: How long creating a stream waits for NATS (an election, a node restarting).
ENSURE_RETRY_S = 60.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]


def stream_config(spec: StreamSpec, replicas: int) -> api.StreamConfig:
    """File storage, kept forever, never purged or edited: the stream *is* the event store."""
    return api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.NEW,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
        allow_atomic=True,
        deny_delete=True,
        deny_purge=True,
    )


async def ensure_stream(
    js: JetStreamContext, spec: StreamSpec, replicas: int = 1, retry_for: float = ENSURE_RETRY_S
) -> None:
    """Create the stream, or widen its subjects; an existing stream's data is never touched."""
    await retry_transient(
        lambda: _ensure_once(js, spec, replicas),
        what=f"creating stream {spec.name}",
        retry_for=retry_for,
    )


async def _ensure_once(js: JetStreamContext, spec: StreamSpec, replicas: int) -> None:
    config = stream_config(spec, replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        # Two services creating one stream at once is fine: the same config is accepted twice.
        await js.add_stream(config)
        return
    have = set(info.config.subjects or [])
    if not set(spec.subjects) <= have:
        await js.update_stream(info.config.evolve(subjects=sorted(have | set(spec.subjects))))

"""Event stream definitions and their idempotent creation on JetStream.

Creating a stream rides out a leader election or a node restart (``services.kernel.transient``):
a service starting while one node of a cluster is down waits for it, then exits if it never
comes, rather than crashing at its first call. More replicas than NATS can place
(``STUDIO_STREAM_REPLICAS`` above the cluster's size, or above 1 on a single server) stop the
service with a message naming the setting, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from services.kernel.bus import NatsUnavailable
from services.kernel.transient import NO_PEERS, NOT_CLUSTERED, retry_transient

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
    """Create the stream, or widen its subjects; an existing stream's data is never touched.
    ``ReplicasRefused`` when NATS cannot place ``replicas`` copies of it."""
    try:
        await retry_transient(
            lambda: _ensure_once(js, spec, replicas),
            what=f"creating stream {spec.name}",
            retry_for=retry_for,
        )
    except APIError as exc:
        if exc.err_code not in (NO_PEERS, NOT_CLUSTERED):
            raise
        raise ReplicasRefused(
            f"NATS cannot keep {replicas} replicas of stream {spec.name} "
            f"(STUDIO_STREAM_REPLICAS={replicas}): {exc.description}. Set STUDIO_STREAM_REPLICAS "
            "to at most the number of nodes of the JetStream cluster (1 for a single server)"
            + (", or start the nodes that are down." if exc.err_code == NO_PEERS else ".")
        ) from None


class ReplicasRefused(NatsUnavailable):
    """NATS cannot place the replicas asked: a setting to change, said to people (exit 2)."""


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

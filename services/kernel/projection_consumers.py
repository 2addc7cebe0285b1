"""The projection runner's JetStream side: one durable pull consumer per group of projectors,
delivering from where the read model says they are.

Projectors of one stream and filter form a ``Group`` sharing one consumer, named after the
group's first projector. ``subscribe`` binds to it after checking that its acknowledged floor
is the group's lowest stored position, and recreates it from there otherwise: the read model's
positions, stored with its rows, decide what is delivered, never the consumer's own state (a
read model deleted, moved aside or rebuilt is replayed from the start; one a killed process
left behind its consumer's acks resumes where its rows end). ``retire`` deletes the consumers
kept per projector before they shared one. The loop that fetches and applies is
``services.kernel.projection``'s.

Imports nats-py and the standard library only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

#: How long a consumer nobody binds to is kept (a service down for a week resumes on it).
INACTIVE_S = 7 * 24 * 3600.0
#: How long an unacknowledged batch waits before the server delivers it again.
ACK_WAIT_S = 60.0


class Member(Protocol):
    """What grouping needs of a projector."""

    name: str
    stream: str
    filter_subject: str


@dataclass
class Group:
    """One stream's (and filter's) projectors: one consumer, named after the first's."""

    name: str
    stream: str
    filter_subject: str
    projectors: list[Any]


def grouped(projectors: Sequence[Member]) -> list[Group]:
    """The projectors in groups of one stream and filter, in the order of their first."""
    groups: dict[tuple[str, str], Group] = {}
    for p in projectors:
        fresh = Group(p.name, p.stream, p.filter_subject, [])
        groups.setdefault((p.stream, p.filter_subject), fresh).projectors.append(p)
    return list(groups.values())


def safe(name: str) -> str:
    """``name`` as a consumer name may hold it."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


async def retire(js: JetStreamContext, group: Group, durable: Any) -> None:
    """Delete the consumers kept per projector before they shared one (best effort);
    ``durable`` names a projector's consumer."""
    for p in group.projectors[1:]:
        with contextlib.suppress(Exception):
            await js.delete_consumer(group.stream, durable(p.name))


async def subscribe(js: JetStreamContext, group: Group, durable: str, position: int) -> Any:
    """A pull subscription on ``durable``, (re)created to deliver from after ``position``."""
    try:
        info = await js.consumer_info(group.stream, durable)
        aligned = info.ack_floor is not None and info.ack_floor.stream_seq == position
        if not aligned or info.num_ack_pending:
            await js.delete_consumer(group.stream, durable)
            raise NotFoundError
    except NotFoundError:
        await js.add_consumer(
            group.stream,
            api.ConsumerConfig(
                durable_name=durable,
                filter_subject=group.filter_subject,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=position + 1,
                ack_policy=api.AckPolicy.ALL,
                ack_wait=ACK_WAIT_S,
                inactive_threshold=INACTIVE_S,
            ),
        )
    return await js.pull_subscribe_bind(durable=durable, stream=group.stream)

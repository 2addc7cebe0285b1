"""The datasets service's queries check a dataset's position once for all the queries that
arrive together (a trainer fetching many images at once), and still never answer one from a
check made before it arrived: what was stored before a query is in its answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts import datasets as d
from services.datasets.queries import Queries
from services.kernel.blobstore import BlobStore
from services.kernel.eventstore import StoredEvent

P = "p" * 32


def image(name: str) -> d.ImageRecord:
    return d.ImageRecord(
        image_id=name * 64, filename=f"{name}.png", label="cat", width=1, height=1, size=1,
        format="png", phash="0" * 16,
    )  # fmt: skip


class HeldEvents:
    """A dataset's events whose position check reads the position when it is asked, then
    waits for ``gate``: a check under way while more is stored answers the older position."""

    def __init__(self) -> None:
        self.events: list[d.Event] = []
        self.checks = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def store(self, name: str) -> None:
        self.events.append(d.ImagesAdded(dataset_id=P, import_id="i", images=[image(name)]))

    async def version(self, aggregate_id: str) -> int:
        self.checks += 1
        position = len(self.events)
        await self.gate.wait()
        return position

    async def load(self, aggregate_id: str, after: int = 0) -> list[StoredEvent[d.Event]]:
        return [
            StoredEvent(i + 1, "evt", e, {}) for i, e in enumerate(self.events) if i + 1 > after
        ]


async def test_queries_arriving_together_share_their_position_checks() -> None:
    # Given a check under way, held
    events = HeldEvents()
    events.store("a")
    queries = Queries(events, BlobStore(Path("unused")))
    events.gate.clear()
    first = asyncio.create_task(queries.view(P))
    await asyncio.sleep(0)
    # When twenty more queries arrive meanwhile
    others = [asyncio.create_task(queries.view(P)) for _ in range(20)]
    await asyncio.sleep(0)
    events.gate.set()
    views = await asyncio.gather(first, *others)
    # Then two checks answered them all: the one under way, and one made after they arrived
    assert events.checks == 2
    assert all(set(v.labels) == {"a" * 64} for v in views)


async def test_a_query_never_takes_a_check_made_before_it_arrived() -> None:
    # Given a check under way that read the position before an image was stored
    events = HeldEvents()
    events.store("a")
    queries = Queries(events, BlobStore(Path("unused")))
    events.gate.clear()
    early = asyncio.create_task(queries.view(P))
    await asyncio.sleep(0)
    events.store("b")
    # When a query arrives after the image was stored
    late = asyncio.create_task(queries.view(P))
    await asyncio.sleep(0)
    events.gate.set()
    # Then its view has the image; the early one's may not
    assert "b" * 64 in (await late).labels
    assert events.checks == 2
    await early

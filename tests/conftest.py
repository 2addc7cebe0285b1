"""Fixtures shared by every test layer: a real nats-server on a random port with a temp store,
and the whole studio as child processes.

Starting a studio costs seconds of CPU (the trainer imports torch), so modules that need the same
services share one: ``stack`` hands each module the running studio of its services (its
``STACK_SERVICES``, else all), modules are ordered so that those of one set of services run one
after another (``pytest_collection_modifyitems``), and at most one shared studio runs at a time.
Each test makes its own projects; after a module the studio is settled (its runs and searches
stopped) or, when it cannot be or a process of it died, replaced by a fresh one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS

from services.kernel import nats_server
from services.kernel.nats_server import EmbeddedNats
from tests.stack import API, SERVICES, Stack

#: The trainer imports torch before it answers: on a loaded two-core machine that alone can
#: take half a minute, so a studio with it waits longer to be healthy.
PATIENT_S = 150.0
#: How long a module's leftover runs and searches may take to stop before the studio is replaced.
SETTLE_S = 60.0


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = nats_server.start(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_srv: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_srv.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield conn
    await conn.close()


class Studios:
    """The session's shared studios, one running at a time, keyed by their services."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.key: tuple[str, ...] | None = None
        self.current: Stack | None = None

    def of(self, services: tuple[str, ...]) -> Stack:
        """The running studio of ``services``: the current one when it has them and is whole."""
        key = normalised(services)
        if self.current is not None and (self.key != key or not whole(self.current)):
            self.close()
        if self.current is None:
            studio = Stack(self.factory.mktemp("studio"), key)
            try:
                studio.up(PATIENT_S)
            except BaseException:
                studio.down()
                raise
            self.key, self.current = key, studio
        return self.current

    def settle(self) -> None:
        """After a module: stop what it left running, or replace the studio when that fails."""
        if self.current is None or "trainer" not in self.current.services:
            return
        try:
            settle(self.current)
        except Exception:  # a studio that cannot settle is replaced, not reused
            self.close()

    def close(self) -> None:
        if self.current is not None:
            self.current.down()
        self.key, self.current = None, None


#: Modules of the first set run on the studio of the second: the exporter acts only when asked
#: (an export command; the training events it reads only feed its read model), so a studio with
#: it serves a module that trains and never exports as one without it would, and the modules of
#: both sets share one studio start (seconds of CPU: the exporter and the trainer import torch).
SERVED_BY = {("identity", "projects", "datasets", "trainer"): SERVICES}


def normalised(services: tuple[str, ...]) -> tuple[str, ...]:
    """The services of the studio that serves a module of ``services``, in the studio's order,
    with identity (every studio signs in)."""
    wanted = {"identity", *services}
    key = tuple(name for name in SERVICES if name in wanted)
    return SERVED_BY.get(key, key)


def whole(studio: Stack) -> bool:
    """Every process of the studio is there and alive (a test may have killed or paused one)."""
    names = {*studio.services, "gateway"}
    procs = studio.procs
    return names <= procs.keys() and all(procs[n].poll() is None for n in names)


def settle(studio: Stack) -> None:
    """Stops every search and run left going, and waits until none runs or waits."""
    with studio.sync_client(timeout=15) as api:
        for exp in api.get(f"{API}/experiments", params={"limit": 200}).json()["data"]["items"]:
            if exp["status"] in ("running", "queued", "stopping"):
                api.post(f"{API}/experiments/{exp['id']}/stop")
        deadline = time.monotonic() + SETTLE_S
        while True:
            queue = api.get(f"{API}/training/queue").json()["data"]
            active = [r for r in queue["running"] + queue["queued"] if r.get("id")]
            if not active:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs still going: {active}")
            for run in active:
                if run["status"] in ("queued", "running"):
                    api.post(f"{API}/training/runs/{run['id']}/stop")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def studios(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studios]:
    shared = Studios(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, studios: Studios) -> Iterator[Stack]:
    """The running studio of the module's services, shared with the modules that need the same
    (each test makes its own projects); a module's ``STACK_SERVICES`` names them, when not all.
    A module whose tests read process-wide state (metrics counters) sets ``STACK_SHARED = False``
    and gets a studio of its own."""
    if not getattr(request.module, "STACK_SHARED", True):
        own = Stack(studios.factory.mktemp("stack"), services_of(request))
        try:
            yield own.up(PATIENT_S)
        finally:
            own.down()
        return
    yield studios.of(services_of(request))
    studios.settle()


@pytest.fixture
def own_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A studio of the test's own, for tests that stop, kill or restart parts of it."""
    s = Stack(tmp_path, services_of(request), STUDIO_REQUEST_TIMEOUT="1.5")
    try:
        yield s
    finally:
        s.down()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's studio, signed in as its first admin."""
    async with stack.client(timeout=15) as client:
        yield client


def services_of(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return tuple(getattr(request.module, "STACK_SERVICES", SERVICES))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules on a shared studio of the same services run one after another (in the order the
    first of them was collected), so that each studio starts once; the others keep their place."""
    keys: dict[object, object] = {}
    for item in items:
        module = getattr(item, "module", None)
        keys[module] = keys.get(module) or shared_key(item)
    first: dict[object, int] = {}
    order: list[tuple[int, int, pytest.Item]] = []
    for index, item in enumerate(items):
        module = getattr(item, "module", None)
        key = keys[module] or module
        first.setdefault(key, index)
        order.append((first[key], index, item))
    items[:] = [item for _, _, item in sorted(order, key=lambda entry: entry[:2])]


def shared_key(item: pytest.Item) -> tuple[str, ...] | None:
    """The services of the shared studio an item runs on; None when it runs on none."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.get("stack") if info else None
    if not definitions or definitions[-1].baseid not in ("", "tests"):
        return None  # the module's own ``stack``
    if not getattr(item.module, "STACK_SHARED", True):
        return None
    return normalised(tuple(getattr(item.module, "STACK_SERVICES", SERVICES)))

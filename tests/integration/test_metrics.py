"""The kernel's metrics as Prometheus scrapes them from a running studio: commands and the
events they append (projects' ``/metrics``), the gateway's projectors consuming them (events
consumed, position, lag), sign-ins and refreshes (identity), live SSE and WebSocket clients
(the gateway), the build of every process, and GPU series only where a GPU is.

A service's ``/metrics`` URL is the one its health answer (``Pong``) gives, through the
gateway's ``/health``; the gateway serves its own ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from contracts import new_id
from contracts import projects as p
from services.kernel.gpu import Nvml
from tests.stack import ADMIN, ADMIN_PASSWORD, API, Stack
from tests.stream_helpers import Runs, frame, ws_url
from tests.training_helpers import wait

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)
WAIT_S = 30.0


class Scrape:
    """One scrape of a ``/metrics``: its samples, by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of ``name``'s samples that carry ``labels``; None when there is none."""
        found = [v for n, lb, v in self.samples if n == name and labels.items() <= lb.items()]
        return sum(found) if found else None

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


@pytest.fixture(scope="module")
def urls(stack: Stack) -> dict[str, str]:
    with stack.sync_client() as api:
        services = api.get("/health").json()["data"]["services"]
    found = {name: services[name]["metrics_url"] for name in ("identity", "projects")}
    return found | {"gateway": f"{stack.base_url}/metrics"}


def scrape(url: str) -> Scrape:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return Scrape(answer.text)


def until(url: str, condition: Callable[[Scrape], Any], timeout: float = WAIT_S) -> Scrape:
    """The first scrape of ``url`` that meets ``condition`` (polled, with a deadline)."""

    def met() -> Scrape | None:
        s = scrape(url)
        return s if condition(s) else None

    found: Scrape = wait(met, timeout, every=0.1)
    return found


def test_every_process_says_its_build_and_the_series_exist_before_any_event(urls):
    for service, url in urls.items():
        s = scrape(url)
        assert s.value("studio_build_info", service=service) == 1, service
    gateway, identity = scrape(urls["gateway"]), scrape(urls["identity"])
    for kind in ("sse", "websocket"):
        assert gateway.value("studio_live_clients", kind=kind) is not None
    for outcome in ("succeeded", "refused", "locked"):
        assert identity.value("studio_sign_ins_total", outcome=outcome) is not None
    assert identity.value("studio_sessions_refreshed_total") is not None
    projects = scrape(urls["projects"])
    created = {"service": "projects", "command": "CreateProject", "outcome": "accepted"}
    assert projects.value("studio_commands_total", **created) is not None
    # the gateway's projectors are labelled by service, projector and stream
    for name in ("studio_events_consumed_total", "studio_projection_position"):
        assert gateway.value(name, service="gateway", stream=p.STREAM) is not None
    assert gateway.value("studio_consumer_lag_events", service="gateway") is not None


def test_commands_append_events_that_the_gateway_consumes_without_lag(stack: Stack, urls):
    projects_before, gateway_before = scrape(urls["projects"]), scrape(urls["gateway"])
    created = {"service": "projects", "command": "CreateProject", "outcome": "accepted"}
    # when two projects are created and one renamed
    with stack.sync_client() as api:
        ids = [
            api.post(f"{API}/projects", json={"name": f"m{i}"}).json()["data"]["id"]
            for i in range(2)
        ]
        renamed = api.patch(f"{API}/projects/{ids[0]}", json={"name": "renamed"})
        assert renamed.status_code == 200, renamed.text
    # then the projects service counted the commands and the events it appended
    projects = scrape(urls["projects"])
    assert (
        projects.value("studio_commands_total", **created)
        == (projects_before.value("studio_commands_total", **created) or 0) + 2
    )
    appended = projects.value("studio_events_appended_total", stream=p.STREAM) or 0
    assert (
        appended
        >= (projects_before.value("studio_events_appended_total", stream=p.STREAM) or 0) + 3
    )
    assert (projects.value("studio_command_seconds_count", service="projects") or 0) >= 3
    # and the gateway's projectors consumed them, reached the stream's end, and lag no more
    mine = {"service": "gateway", "stream": p.STREAM}
    consumed_before = gateway_before.value("studio_events_consumed_total", **mine) or 0
    gateway = until(
        urls["gateway"],
        lambda s: (
            (s.value("studio_events_consumed_total", **mine) or 0) >= consumed_before + 3
            and s.value("studio_consumer_lag_events", **mine) == 0
        ),
    )
    position = max(
        v
        for n, lb, v in gateway.samples
        if n == "studio_projection_position" and mine.items() <= lb.items()
    )
    assert position >= 3
    assert (gateway.value("studio_http_requests_total", method="POST") or 0) >= 2


def test_sign_ins_and_refreshes_are_counted_by_outcome(stack: Stack, urls):
    before = scrape(urls["identity"])

    def grew(s: Scrape, name: str, **labels: str) -> float:
        return (s.value(name, **labels) or 0) - (before.value(name, **labels) or 0)

    token_url = f"{stack.base_url}{API}/auth/token"
    wrong = httpx.post(token_url, data={"username": ADMIN, "password": "not it"}, timeout=15)
    assert wrong.status_code == 401
    right = httpx.post(token_url, data={"username": ADMIN, "password": ADMIN_PASSWORD}, timeout=15)
    assert right.status_code == 200, right.text
    body = {"refresh_token": right.json()["refresh_token"]}
    refreshed = httpx.post(f"{stack.base_url}{API}/auth/refresh", json=body, timeout=15)
    assert refreshed.status_code == 200, refreshed.text
    after = scrape(urls["identity"])
    assert grew(after, "studio_sign_ins_total", outcome="refused") == 1
    assert grew(after, "studio_sign_ins_total", outcome="succeeded") == 1
    assert grew(after, "studio_sessions_refreshed_total") == 1


@pytest.fixture
def live(urls) -> Iterator[Callable[[str], float]]:
    def count(kind: str) -> float:
        return scrape(urls["gateway"]).value("studio_live_clients", kind=kind) or 0

    yield count


def test_an_open_sse_stream_is_a_live_client_until_it_closes(stack: Stack, live):
    with stack.sync_client() as api:
        project = api.post(f"{API}/projects", json={"name": "sse"}).json()["data"]["id"]
        before = live("sse")
        with api.stream("GET", f"{API}/projects/{project}/events") as events:
            assert events.status_code == 200
            chunks = events.iter_raw()  # held: a dropped iterator closes the stream
            assert next(chunks).startswith(b"retry:")  # the stream has begun
            wait(lambda: live("sse") == before + 1, WAIT_S)
        wait(lambda: live("sse") == before, WAIT_S)


async def test_an_open_websocket_is_a_live_client_until_it_closes(stack: Stack, live):
    nc, runs = await Runs.connect(stack.nats_url)
    try:
        experiment = new_id()
        await runs.start(await runs.queue(experiment))
        before = await asyncio.to_thread(live, "websocket")
        url = ws_url(stack.base_url, f"/ws/experiments/{experiment}")
        async with connect(url, additional_headers=stack.headers()) as sock:
            assert frame(await asyncio.wait_for(sock.recv(), WAIT_S))["type"] == "snapshot"
            await asyncio.to_thread(wait, lambda: live("websocket") == before + 1, WAIT_S)
        await asyncio.to_thread(wait, lambda: live("websocket") == before, WAIT_S)
    finally:
        await nc.close()


def test_gpu_series_are_there_exactly_when_this_machine_has_a_gpu(urls):
    gpus = Nvml().read().gpus
    names = scrape(urls["gateway"]).names()
    gpu_names = {n for n in names if n.startswith("studio_gpu_")}
    if gpus:
        assert "studio_gpu_memory_total_bytes" in gpu_names
    else:
        assert gpu_names == set()

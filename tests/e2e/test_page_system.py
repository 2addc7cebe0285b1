"""The system page in a real Chromium: "CPU only" on a machine without NVML, who holds a device
lease, the health of every service, figures fetched again every few seconds (a service that
stops shows as down without a reload), accessible at both widths; and GET /api/system's
fragment beside its JSON."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import nats
import pytest
from playwright.sync_api import expect

from services.kernel.lease import Leases
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot, sign_in
from tests.stack import ADMIN, ADMIN_PASSWORD, API, Stack

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects")
HX = {"HX-Request": "true"}
DEVICE = "gpu-e2e-0"
HOLDER = "trainer@e2e-host"


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


@pytest.fixture
def held_lease(studio: Stack) -> Iterator[None]:
    """A device lease held (and renewed) by a stand-in trainer while the test runs."""
    ready, done = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    async def hold() -> None:
        nc = await nats.connect(studio.nats_url)
        try:
            leases = Leases(nc.jetstream())
            await leases.open()
            lease = await leases.acquire(DEVICE, HOLDER)
            assert lease is not None, "the test's device is leased already"
            async with lease.keep_alive():
                ready.set()
                await asyncio.get_running_loop().run_in_executor(None, done.wait)
        finally:
            await nc.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # reported by the test, not lost in the thread
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30) and not failed, failed
    try:
        yield
    finally:
        done.set()
        thread.join(30)


def test_the_system_route_answers_json_to_scripts_and_html_to_htmx(studio):
    with studio.sync_client() as api:
        data = api.get(f"{API}/system").json()["data"]
        html = api.get(f"{API}/system", headers=HX)
    # No NVIDIA driver on the test machines: no GPUs, and why.
    assert data["gpus"] == [] and data["gpus_reason"]
    assert {"gateway", "identity", "projects"} <= set(data["services"])
    assert all(s["ok"] for s in data["services"].values()) and data["nats"]["ok"]
    assert set(data["queue"]) == {"running", "queued"} and data["workspace"]["free"] > 0
    assert html.headers["content-type"].startswith("text/html")
    assert "CPU only" in html.text and 'data-service="identity"' in html.text


def test_the_page_shows_cpu_only_the_lease_holder_and_every_service(studio, open_page, held_lease):
    page, _ = open_page()
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    page.get_by_role("link", name="System").click()
    page.wait_for_url(f"{studio.base_url}/system")
    figures = page.locator("#system-figures")
    expect(figures.get_by_text("CPU only")).to_be_visible()
    expect(figures.locator("#health-summary")).to_have_text("Everything is running.")
    lease = figures.locator("#leases tbody tr").filter(has_text=DEVICE)
    expect(lease).to_contain_text(HOLDER)
    for service in ("gateway", "identity", "projects", "nats"):
        expect(figures.locator(f"[data-service={service}] .badge")).to_have_text("running")
    # The figures come again every few seconds, without a reload.
    with page.expect_response(lambda r: r.url.endswith("/api/v1/system"), timeout=15_000):
        pass
    screenshot(page, "system-lease")


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_system_page_is_accessible_and_fits(studio, open_page, viewport):
    page, _ = open_page(viewport=viewport)
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{studio.base_url}/system")
    expect(page.locator("#services")).to_be_visible()
    screenshot(page, "system")
    assert axe_violations(page) == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_service_that_stops_shows_as_down_on_the_next_refresh(studio, open_page):
    page, _ = open_page()
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{studio.base_url}/system")
    row = page.locator("[data-service=projects]")
    expect(row.locator(".badge")).to_have_text("running")
    studio.stop("projects")
    try:
        expect(row.locator(".badge")).to_have_text("down", timeout=20_000)
        expect(row).to_contain_text("not running")
        expect(page.locator("#health-summary")).to_have_text("Not everything is running: projects.")
    finally:
        studio.start("projects")
        studio.wait_healthy()
    expect(row.locator(".badge")).to_have_text("running", timeout=20_000)

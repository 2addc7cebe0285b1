"""The training page in a real Chromium: the form drawn from the API's schema and its field
errors, a run started from it whose chart gains exactly one point per epoch through a stop, a
gateway restart and a resume, the queue, runs compared side by side; and its fragments."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from msgspec.structs import fields as struct_fields
from playwright.sync_api import expect
from pydantic import BaseModel, Field

from contracts.training import HYPERPARAMETER_CHOICES, MODELS, Hyperparameters
from services.gateway.pages import fragment_templates
from services.gateway.pages.training import FRAGMENTS, RUN_FIELDS, form_fields
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_training import (
    TRAINING_MS,
    compare_runs,
    points,
    resume_run,
    sign_in,
    start_run,
    stop_run,
    training_url,
    wait_complete,
    wait_points,
    wait_status,
)
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import API, client, learnable_split, submit
from tests.training_helpers import run as run_detail
from tests.training_helpers import wait_status as api_wait_status

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets", "trainer")
#: What a browser logs while the gateway restarts under an open page.
RESTART_NOISE = (
    r"ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE"
    r"|htmx:sendError|htmx:afterRequest"
)
#: Every value the loss chart's data-points takes, recorded as it changes.
RECORD_POINTS = """() => {
  const canvas = document.getElementById('chart-loss');
  window.__points = [canvas.getAttribute('data-points')];
  new MutationObserver(() => window.__points.push(canvas.getAttribute('data-points')))
    .observe(canvas, {attributes: true, attributeFilter: ['data-points']});
}"""


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


@pytest.fixture(scope="module")
def split(studio: Stack) -> tuple[str, str]:
    # 50 images a class: several batches an epoch, so a stop lands while the run still trains.
    return learnable_split(studio, per_class=50)


@pytest.fixture(scope="module")
def finished(studio: Stack, split: tuple[str, str]) -> list[str]:
    """Two completed runs of the project that differ in their learning rate."""
    project_id, split_id = split
    ids = []
    for rate in (0.003, 0.01):
        hyper = {"epochs": 2, "learning_rate": rate}
        answer = submit(studio, project_id, split_id, hyperparameters=hyper)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["data"]["id"])
    for run_id in ids:
        api_wait_status(studio, run_id, "completed")
    return ids


def signed_in(
    studio: Stack, open_page: Any, project_id: str, viewport: dict[str, int] = WIDE, query: str = ""
) -> tuple[Any, Any]:
    """A page signed in through the form, on the project's training page."""
    page, watch = open_page(viewport=viewport)
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD, training_url("", project_id) + query)
    return page, watch


# --- the form, as the API's schema says -------------------------------------------------------


def test_form_fields_follow_a_models_json_schema():
    class Inner(BaseModel):
        rate: float = Field(0.5, gt=0, le=1, description="how fast")
        kind: str = "a"
        on: bool = True

    class Outer(BaseModel):
        fixed: str
        inner: Inner = Field(default_factory=Inner)
        count: int | None = Field(None, ge=1, le=9)

    fields = {f.name: f for f in form_fields(Outer, frozenset({"fixed"}))}
    assert list(fields) == ["inner.rate", "inner.kind", "inner.on", "count"]
    rate, count = fields["inner.rate"], fields["count"]
    assert (rate.kind, rate.step, rate.above, rate.maximum, rate.help) == (
        "number",
        "any",
        0,
        1,
        "how fast",
    )
    assert rate.range_text == "above 0, at most 1 · default 0.5"
    assert (fields["inner.on"].kind, fields["inner.kind"].kind) == ("checkbox", "text")
    assert (count.kind, count.step, count.minimum, count.maximum) == ("number", "1", 1, 9)
    assert count.range_text == "1 to 9 · optional"
    assert count.dom_id == "count" and rate.dom_id == "inner-rate"


def test_the_run_form_has_every_hyperparameter_of_the_api():
    names = {f.name: f for f in RUN_FIELDS}
    for field in struct_fields(Hyperparameters):
        shown = names[f"hyperparameters.{field.name}"]
        assert shown.default == field.default, field.name
        if field.name in HYPERPARAMETER_CHOICES:
            assert shown.choices == HYPERPARAMETER_CHOICES[field.name]
    assert names["hyperparameters.model"].choices == MODELS
    assert names["hyperparameters.epochs"].minimum == 1
    assert "if_busy" in names and "project_id" not in names


def test_the_training_fragments_are_registered_as_the_pages_own():
    templates = fragment_templates()
    for key, template in FRAGMENTS.items():
        assert templates[key] == template, f"another page took over {key}"


# --- fragments: one route, two audiences --------------------------------------------------------


def test_the_queue_and_the_comparison_answer_htmx_with_html_and_scripts_with_json(
    studio, split, finished
):
    project_id, _ = split
    hx = {"HX-Request": "true"}
    with client(studio) as api:
        queue = api.get(f"{API}/training/queue", params={"project_id": project_id}, headers=hx)
        assert queue.status_code == 200 and queue.headers["content-type"].startswith("text/html")
        assert "Devices" in queue.text and "<script" not in queue.text
        assert api.get(f"{API}/training/queue").json()["status"] == "ok"
        ids = ",".join(finished)
        table = api.get(f"{API}/training/compare", params={"run_ids": ids}, headers=hx)
        assert table.headers["content-type"].startswith("text/html")
        assert 'data-runs="2"' in table.text and "learning rate" in table.text
        assert all(run_id[:8] in table.text for run_id in finished)
        # an error to htmx is the error fragment, its field named
        bad = api.get(f"{API}/training/compare", params={"run_ids": finished[0]}, headers=hx)
        assert bad.status_code == 422 and 'id="error-run_ids"' in bad.text
        assert api.get(f"{API}/training/compare", params={"run_ids": ids}).json()["data"]["runs"]


# --- in the browser -----------------------------------------------------------------------------


def test_a_bad_hyperparameter_is_told_next_to_its_field(studio, split, open_page):
    project_id, split_id = split
    page, watch = signed_in(studio, open_page, project_id)
    watch.expect("status of 422|Error Code 422")
    form = page.locator("#run-form")
    # the defaults and bounds come from the API's schema
    expect(form.locator("[name='hyperparameters.epochs']")).to_have_value("10")
    expect(form.locator("[name='hyperparameters.epochs']")).to_have_attribute("max", "1000")
    expect(form.locator("[name='hyperparameters.optimizer']")).to_have_value("adamw")
    expect(form.locator("#f-split_id")).to_have_value(split_id)
    # what is no number is told as such, not sent as the default
    batch = form.locator("[name='hyperparameters.batch_size']")
    batch.fill("")
    batch.press_sequentially("1e")
    form.get_by_role("button", name="Start run").click()
    expect(page.locator("#error-hyperparameters-batch_size")).to_have_text("Enter a number.")
    batch.fill("8")
    # refused by the gateway's model
    form.locator("[name='hyperparameters.learning_rate']").fill("0")
    form.get_by_role("button", name="Start run").click()
    expect(page.locator("#error-hyperparameters-learning_rate")).to_contain_text("greater than 0")
    # refused by the trainer, which knows what a backbone needs
    form.get_by_role("button", name="Back to the defaults").click()
    form.locator("[name='hyperparameters.model']").select_option("resnet18")
    form.locator("[name='hyperparameters.image_size']").fill("16")
    form.get_by_role("button", name="Start run").click()
    expect(page.locator("#error-hyperparameters-image_size")).not_to_be_empty()
    expect(page.locator("#error-hyperparameters-learning_rate")).to_be_empty()
    expect(page.locator("#flash")).not_to_be_empty()
    with client(studio) as api:
        runs = api.get(f"{API}/training/runs", params={"project_id": project_id}).json()
    assert all(r["hyperparameters"]["model"] != "resnet18" for r in runs["data"]["items"])


def test_a_run_draws_one_point_per_epoch_through_stop_restart_and_resume(studio, split, open_page):
    project_id, split_id = split
    page, watch = signed_in(studio, open_page, project_id)
    watch.expect(RESTART_NOISE)
    run_id = start_run(page, studio.base_url, project_id, split_id, epochs=4)
    page.evaluate(RECORD_POINTS)
    # the batches of the epoch under way, with the time left
    expect(page.locator("#batch-text")).to_contain_text(
        re.compile(r"Epoch \d of 4 · batch \d+ of \d+"), timeout=TRAINING_MS
    )
    expect(page.locator("#batch-eta")).to_contain_text(re.compile(r"about \d+.* left"))
    assert wait_points(page, 1) >= 1
    assert stop_run(page) == "stopped", "the run ended before the stop reached it"
    stopped = run_detail(studio, run_id)
    assert 1 <= stopped["epochs_done"] < 4
    expect(page.locator("#chart-loss")).to_have_attribute(
        "data-points", str(stopped["epochs_done"])
    )
    # the gateway restarts under the open stream: it comes back after the last id it saw
    studio.stop("gateway")
    studio.start("gateway")
    studio.wait_healthy()
    expect(page.locator("#stream-state")).to_have_text("Live", timeout=60_000)
    assert resume_run(page) in ("queued", "running", "completed")
    screenshot(page, "training-live")
    assert wait_complete(page) == 4
    recorded = [int(n) for n in page.evaluate("window.__points")]
    assert recorded[-1] == 4 and max(recorded) == 4
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(recorded)), recorded
    history = run_detail(studio, run_id)["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4]
    expect(page.locator("#epochs-body tr")).to_have_count(4)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    # a page opened anew replays the stream from its start: still one point per epoch
    page.reload()
    wait_status(page, "completed")
    expect(page.locator("#chart-loss")).to_have_attribute("data-points", "4")
    for chart in ("#chart-accuracy", "#chart-lr"):
        expect(page.locator(chart)).to_have_attribute("data-points", "4")
    assert points(page) == 4


def test_the_queue_shows_the_device_holder_and_the_places(studio, split, open_page):
    project_id, split_id = split
    long = submit(studio, project_id, split_id, hyperparameters={"epochs": 200}).json()["data"]
    waiting = submit(studio, project_id, split_id).json()["data"]
    try:
        api_wait_status(studio, long["id"], "running")
        page, _ = signed_in(studio, open_page, project_id)
        queue = page.locator("#queue")
        expect(queue.locator(".leases")).to_contain_text(f"for run {long['id'][:8]}")
        place = queue.locator("tr", has_text=waiting["id"][:8])
        expect(place.locator("td.position")).to_have_text("1")
        expect(place.locator(".badge")).to_have_text("queued")
        # its link selects the run on the page
        place.get_by_role("link").click()
        expect(page.locator("#run-id")).to_have_text(waiting["id"][:8])
        expect(page.locator("#run-status")).to_have_attribute("data-status", "queued")
        expect(page.get_by_role("button", name="Stop", exact=True)).to_be_enabled()
        expect(page.get_by_role("button", name="Resume", exact=True)).to_be_disabled()
        # someone of no project sees that the device is busy and the queue's length, no ids
        studio.create_user("outsider", "outsider-password-1")
        outsider = studio.headers(studio.sign_in("outsider", "outsider-password-1"))
        with client(studio) as api:
            hx = outsider | {"HX-Request": "true"}
            seen = api.get(f"{API}/training/queue", headers=hx)
        assert seen.status_code == 200 and "a run of another project" in seen.text
        assert long["id"][:8] not in seen.text and waiting["id"][:8] not in seen.text
    finally:
        with client(studio) as api:
            for run in (waiting, long):
                api.post(f"{API}/training/runs/{run['id']}/stop")
        api_wait_status(studio, long["id"], "stopped", "completed")


def test_runs_compared_side_by_side(studio, split, finished, open_page):
    project_id, _ = split
    page, _ = signed_in(studio, open_page, project_id)
    compare_runs(page, finished)
    table = page.locator("#compare-table table")
    expect(table.locator("tr.differs", has_text="learning rate")).to_have_count(1)
    expect(table.locator("thead th")).to_have_count(3)
    page.get_by_label("Curve", exact=True).select_option("val_loss")
    expect(page.locator("#chart-compare")).to_have_attribute("data-runs", "2")


def test_a_viewer_sees_the_curves_but_no_controls(studio, split, finished, open_page):
    project_id, _ = split
    studio.create_user("trainee", "trainee-password-1")
    with client(studio) as api:
        member = {"user_id": "trainee", "role": "viewer"}
        added = api.post(f"{API}/projects/{project_id}/members", json=member)
        assert added.status_code == 201, added.text
    page, _ = open_page()
    sign_in(
        page,
        studio.base_url,
        "trainee",
        "trainee-password-1",
        training_url("", project_id) + f"?run={finished[0]}",
    )
    wait_status(page, "completed")
    expect(page.locator("#chart-loss")).to_have_attribute("data-points", "2")
    expect(page.locator("#run-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Resume", exact=True)).to_have_count(0)


def test_a_finished_run_trains_more_when_its_epochs_are_raised(studio, split, finished, open_page):
    project_id, _ = split
    page, _ = signed_in(studio, open_page, project_id, query=f"?run={finished[0]}")
    wait_status(page, "completed")
    expect(page.locator("#chart-loss")).to_have_attribute("data-points", "2")
    resume = page.get_by_role("button", name="Resume", exact=True)
    expect(resume).to_be_disabled()  # a completed run resumes only to more epochs
    page.locator("#resume-form").get_by_label("Epochs").fill("3")
    resume_run(page)
    assert wait_complete(page) == 3
    expect(page.locator("#epochs-body tr")).to_have_count(3)
    assert [e["epoch"] for e in run_detail(studio, finished[0])["history"]] == [1, 2, 3]


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_training_page_is_accessible(studio, split, finished, open_page, viewport):
    project_id, _ = split
    page, _ = signed_in(studio, open_page, project_id, viewport, f"?run={finished[1]}")
    wait_status(page, "completed")
    expect(page.locator("#chart-loss")).to_have_attribute("data-points", "2")
    compare_runs(page, finished)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    screenshot(page, "training")
    assert axe_violations(page) == []

"""The training page's experiments tab in a real Chromium: a search started from the form (two
objectives, a model family, a learning-rate range), its trials arriving live one by one, the
objective over the trials and the trade-off with its Pareto front drawn, a trial promoted to an
export; a bad range told by its field; a page opened after the end drawn from the stream's
replay, accessible, without controls for a viewer; a search stopped and resumed from the page;
and the list's fragment."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from contracts import experiments as x
from services.gateway.pages import fragment_templates
from services.gateway.pages.experiments import FRAGMENTS, METRICS, family_models
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_experiments import (
    RECORD_TRIALS,
    SEARCH_MS,
    choose_objectives,
    experiments_url,
    fill_search,
    start_search,
    trial_states,
    wait_search,
)
from tests.e2e.steps_training import sign_in
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import API, client, learnable_split, wait

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
HX = {"HX-Request": "true"}
TRIALS = 3
FINISHED = ("completed", "failed")


@pytest.fixture(scope="module")
def split(studio: Stack) -> tuple[str, str]:
    # A test subset: a promoted trial is evaluated on it before its export.
    return learnable_split(studio, per_class=16, test=0.2)


#: The search the first test started from the page, for the tests after it.
STARTED: dict[str, str] = {}


@pytest.fixture
def finished_search(studio: Stack, split: tuple[str, str]) -> str:
    """A search of the project that has ended: the first test's, or one started through the
    API when that test did not run."""
    project_id, split_id = split
    if "id" not in STARTED:
        body = {
            "project_id": project_id,
            "split_id": split_id,
            "name": "lr and latency",
            "architecture_type": "smallcnn",
            "max_trials": TRIALS,
            "budget": {"epochs_per_trial": 1},
        }
        with client(studio) as api:
            answer = api.post(f"{API}/experiments", json=body)
        assert answer.status_code == 202, answer.text
        STARTED["id"] = answer.json()["data"]["id"]
    done = wait(lambda: detail(studio, STARTED["id"])["status"] == "completed", SEARCH_MS / 1000)
    assert done
    return STARTED["id"]


def page_of(
    studio: Stack, open_page: Any, project_id: str, query: str = "", **options: Any
) -> tuple[Any, Any]:
    """The project's experiments tab (``query`` added), signed in as the first admin."""
    page, watch = open_page(**options)
    path = f"/projects/{project_id}/training/experiments{query}"
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD, path)
    return page, watch


def detail(studio: Stack, experiment_id: str) -> dict[str, Any]:
    with client(studio) as api:
        answer = api.get(f"{API}/experiments/{experiment_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def trial_of(experiment: dict[str, Any], number: int) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in experiment["trials"] if t["trial"] == number)
    return found


def finished_export(studio: Stack, project_id: str, run_id: str) -> dict[str, Any] | None:
    """The export of ``run_id`` once it has ended, else None."""
    with client(studio) as api:
        items = api.get(f"{API}/export", params={"project_id": project_id}).json()["data"]
    ended = [e for e in items["items"] if e["run_id"] == run_id and e["status"] in FINISHED]
    return ended[0] if ended else None


# --- what the form offers -------------------------------------------------------------------


def test_the_form_offers_what_the_contract_accepts():
    assert [m.name for m in METRICS] == list(x.METRICS)
    models = dict(family_models())
    assert list(models) == list(x.MODEL_FAMILIES["any"])
    for family in x.FAMILIES:
        assert {m for m, fams in models.items() if family in fams} == set(x.MODEL_FAMILIES[family])
    assert (
        fragment_templates()[("GET", "/api/experiments")] == FRAGMENTS[("GET", "/api/experiments")]
    )


# --- in the browser -------------------------------------------------------------------------


def test_a_search_from_the_form_runs_live_and_promotes_a_trial(studio, split, open_page):
    project_id, split_id = split
    page, watch = open_page(viewport=WIDE)
    watch.expect("status of 422|Error Code 422")
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD, f"/projects/{project_id}/training")
    # the training page's tab leads to the searches
    page.get_by_role("navigation", name="Training").get_by_role("link", name="Experiments").click()
    page.wait_for_url(re.compile(re.escape(experiments_url("", project_id))))
    # models outside the chosen family are not offered
    fill_search(page, split_id, "lr and latency", architecture_type="smallcnn")
    expect(page.locator("#model-resnet18")).to_be_hidden()
    page.locator("#model-smallcnn").check()
    # a range upside down is told by the learning rate's fields, nothing is started
    fill_search(page, split_id, "lr and latency", **{"lr-low": "0.1", "lr-high": "0.001"})
    page.get_by_role("button", name="Start search").click()
    expect(page.locator("#error-search_config-learning_rate")).not_to_be_empty()
    expect(page.locator("#flash")).not_to_be_empty()
    # two objectives: the form turns pruning off (several objectives cannot be pruned)
    fill_search(
        page,
        split_id,
        "lr and latency",
        **{"lr-low": "0.001", "lr-high": "0.01", "max_trials": str(TRIALS)},
        epochs_per_trial="1",
    )
    choose_objectives(page, latency_ms="minimize")
    expect(page.locator("#x-pruning")).to_have_value("none")
    page.evaluate(RECORD_TRIALS)
    experiment_id = STARTED["id"] = start_search(page)
    expect(page.locator("#error-search_config-learning_rate")).to_be_empty()
    # the trials arrive live, one by one, while the search runs
    assert wait_search(page, "completed") == "completed"
    expect(page.locator("#trials-table")).to_have_attribute("data-trials", str(TRIALS))
    seen = page.evaluate("window.__trials")
    assert any(0 < n < TRIALS and status == "running" for n, status in seen), seen
    counts = [n for n, _ in seen]
    assert counts == sorted(counts), seen
    # the table, the charts and the facts say what the API says
    found = detail(studio, experiment_id)
    assert len(found["trials"]) == TRIALS and found["status"] == "completed"
    assert trial_states(page) == [t["state"] for t in found["trials"]]
    completed = [t for t in found["trials"] if t["state"] == "completed"]
    expect(page.locator("#chart-trials")).to_have_attribute("data-points", str(len(completed)))
    expect(page.locator("#chart-front")).to_have_attribute("data-front", str(len(found["front"])))
    expect(page.locator("#trials-body tr.on-front")).to_have_count(len(found["front"]))
    assert found["front"], found
    for row in page.locator("#trials-body tr[data-trial]").all():
        expect(row).to_contain_text("smallcnn")
    screenshot(page, "experiments")
    # promote a trial of the front: it is evaluated and exported
    best = found["front"][0]
    row = page.locator(f"#trials-body tr[data-trial='{best}']")
    row.get_by_role("button", name=f"Promote trial {best}").click()
    expect(page.locator("#flash")).to_contain_text(f"Trial {best} is promoted")
    expect(row.get_by_role("link", name=re.compile("Promoted"))).to_be_visible(timeout=SEARCH_MS)
    run_id = trial_of(found, best)["run_id"]
    export = wait(lambda: finished_export(studio, project_id, run_id), SEARCH_MS / 1000)
    assert export["status"] == "completed", export
    # the search records the promotion: a page opened anew shows it too
    promoted = wait(lambda: trial_of(detail(studio, experiment_id), best)["promoted"])
    assert promoted["export_id"] == export["id"]
    page.reload()
    expect(row.get_by_role("link", name=re.compile("Promoted"))).to_have_attribute(
        "href", re.compile(f"export_id={export['id']}")
    )


def test_a_search_opened_after_its_end_is_drawn_from_its_stream(
    studio, split, finished_search, open_page
):
    """A late page (a phone) gets the whole search from the stream's replay; it is accessible,
    and a viewer of the project sees it without the controls."""
    project_id, _ = split
    experiment_id = finished_search
    found = detail(studio, experiment_id)
    page, _ = page_of(studio, open_page, project_id, viewport=PHONE)
    # the newest search is selected by itself
    assert wait_search(page, "completed") == "completed"
    expect(page.locator("#trials-table")).to_have_attribute("data-trials", str(TRIALS))
    assert trial_states(page) == [t["state"] for t in found["trials"]]
    expect(page.locator("#experiment-stream")).to_have_text("")  # the ended stream is closed
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    screenshot(page, "experiments")
    assert axe_violations(page) == []
    # a viewer reads it, with no form and no buttons
    studio.create_user("watcher", "watcher-password-1")
    with client(studio) as api:
        member = {"user_id": "watcher", "role": "viewer"}
        added = api.post(f"{API}/projects/{project_id}/members", json=member)
        assert added.status_code == 201, added.text
    viewer, _ = open_page(viewport=WIDE)
    path = f"/projects/{project_id}/training/experiments?experiment={experiment_id}"
    sign_in(viewer, studio.base_url, "watcher", "watcher-password-1", path)
    assert wait_search(viewer, "completed") == "completed"
    expect(viewer.locator("#trials-table")).to_have_attribute("data-trials", str(TRIALS))
    expect(viewer.locator("#experiment-form")).to_have_count(0)
    expect(viewer.get_by_role("button", name=re.compile("^Promote"))).to_have_count(0)
    expect(viewer.get_by_role("button", name="Stop the search")).to_have_count(0)
    assert axe_violations(viewer) == []


def test_the_list_answers_htmx_with_html_and_scripts_with_json(studio, split, finished_search):
    project_id, split_id = split
    with client(studio) as api:
        listed = api.get(f"{API}/experiments", params={"project_id": project_id}, headers=HX)
        assert listed.headers["content-type"].startswith("text/html"), listed.text
        assert "lr and latency" in listed.text and "<script" not in listed.text
        plain = api.get(f"{API}/experiments", params={"project_id": project_id}).json()
        assert plain["data"]["items"][0]["name"] == "lr and latency"
        # an error to htmx is the error fragment, its field named
        body = {"project_id": project_id, "split_id": split_id, "name": "x", "max_trials": 0}
        bad = api.post(f"{API}/experiments", json=body, headers=HX)
        assert bad.status_code == 422 and 'id="error-max_trials"' in bad.text, bad.text


def test_a_search_is_stopped_and_resumed_from_the_page(studio, split, open_page):
    project_id, split_id = split
    # a search long enough that it is still running when the page stops it
    body = {
        "project_id": project_id,
        "split_id": split_id,
        "name": "long search",
        "architecture_type": "smallcnn",
        "max_trials": 2,
        "budget": {"epochs_per_trial": 50},
    }
    with client(studio) as api:
        answer = api.post(f"{API}/experiments", json=body)
    assert answer.status_code == 202, answer.text
    experiment_id = answer.json()["data"]["id"]
    page, _ = page_of(studio, open_page, project_id, f"?experiment={experiment_id}")
    assert wait_search(page, "running") == "running"
    expect(page.locator("#experiment-stream")).to_have_text("Live")
    resume = page.get_by_role("button", name="Resume the search")
    expect(resume).to_be_disabled()
    page.get_by_role("button", name="Stop the search").click()
    # the stream tells the page the search stopped; only Resume is offered then
    assert wait_search(page, "stopped") == "stopped"
    expect(page.locator("#flash")).to_contain_text("Stopping the search")
    expect(page.get_by_role("button", name="Stop the search")).to_be_disabled()
    assert detail(studio, experiment_id)["status"] == "stopped"
    resume.click()
    assert wait_search(page, "running") == "running"
    expect(page.locator("#flash")).to_contain_text("goes on where it stopped")
    assert detail(studio, experiment_id)["status"] == "running"
    with client(studio) as api:  # no need to train on while the studio is torn down
        assert api.post(f"{API}/experiments/{experiment_id}/stop").status_code == 202

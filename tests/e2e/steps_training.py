"""Journey steps on the training page, done as a person does them: fill the form, click, and
wait for what the page shows (the chart's points, the run's status badge)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from playwright.sync_api import expect

#: Hyperparameters that train the small CNN on a small generated set in seconds on a CPU
#: (``tests.training_helpers.FAST``, but 64 px: each epoch long enough, about half a second on
#: an idle machine for 70 images, that a stop clicked after the first epoch reaches the run
#: before a fourth ends), typed into the form.
FAST_FORM: dict[str, str] = {
    "model": "smallcnn",
    "batch_size": "8",
    "learning_rate": "0.003",
    "image_size": "64",
    "augmentation": "none",
    "seed": "7",
}
#: The longest a step waits for training on a loaded machine, in milliseconds.
TRAINING_MS = 180_000

_RUN_ID = "() => new URL(location.href).searchParams.get('run')"
_STATUS = "document.getElementById('run-status').getAttribute('data-status')"
#: Records every status the badge shows from now on (window.__statuses), however briefly.
_RECORD_STATUSES = """() => {
  window.__statuses = [];
  if (window.__statusObserver) { return; }
  const badge = document.getElementById('run-status');
  window.__statusObserver = new MutationObserver(
    () => window.__statuses.push(badge.getAttribute('data-status')));
  window.__statusObserver.observe(badge, {attributes: true, attributeFilter: ['data-status']});
}"""


def training_url(base_url: str, project_id: str) -> str:
    return f"{base_url}/projects/{project_id}/training"


def sign_in(page: Any, base_url: str, user: str, password: str, path: str) -> None:
    """Sign in through the form on the way to ``path`` (a page of the studio)."""
    page.goto(f"{base_url}/login?next={quote(path, safe='')}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(path.split("?")[0])))


def fill_form(page: Any, split_id: str, **values: str) -> None:
    """Choose the split and type ``values`` (hyperparameter name → text) into the form."""
    form = page.locator("#run-form")
    expect(form.locator(f"#f-split_id option[value='{split_id}']")).to_have_count(1)
    form.get_by_label("Split").select_option(split_id)
    for name, value in values.items():
        field = form.locator(f"[name='hyperparameters.{name}']")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def start_run(
    page: Any, base_url: str, project_id: str, split_id: str, epochs: int, **values: str
) -> str:
    """Start a run through the form (fast settings unless ``values`` say otherwise); returns
    its id once the page shows it selected."""
    if not page.url.split("?")[0].endswith(f"/projects/{project_id}/training"):
        page.goto(training_url(base_url, project_id))
    fill_form(page, split_id, **(FAST_FORM | {"epochs": str(epochs)} | values))
    with page.expect_response(_is_submit) as answer:
        page.locator("#run-form").get_by_role("button", name="Start run").click()
    assert answer.value.status == 202, answer.value.text()
    run_id: str = answer.value.json()["data"]["id"]
    # the page selects the run it started (not one it showed before)
    page.wait_for_function(f"run => ({_RUN_ID})() === run", arg=run_id)
    expect(page.locator("#run-panel")).to_be_visible()
    expect(page.locator("#run-id")).to_have_text(run_id[:8])
    return run_id


def _is_submit(response: Any) -> bool:
    return bool(response.request.method == "POST" and response.url.endswith("/api/v1/training/run"))


def points(page: Any) -> int:
    """How many epochs the selected run's loss chart shows."""
    return int(page.locator("#chart-loss").get_attribute("data-points") or 0)


def wait_points(page: Any, n: int) -> int:
    """Wait until the chart shows at least ``n`` epochs; returns how many it shows."""
    page.wait_for_function(
        "n => Number(document.getElementById('chart-loss').getAttribute('data-points')) >= n",
        arg=n,
        timeout=TRAINING_MS,
    )
    return points(page)


def wait_status(page: Any, *statuses: str) -> str:
    """Wait until the selected run's badge shows one of ``statuses``; returns it."""
    page.wait_for_function(
        f"wanted => wanted.includes({_STATUS})", arg=list(statuses), timeout=TRAINING_MS
    )
    status: str = page.evaluate(_STATUS)
    return status


def stop_run(page: Any) -> str:
    """Click Stop; returns the status the run ends in (``stopped``, or ``completed`` when it
    finished before the stop reached it)."""
    page.get_by_role("button", name="Stop", exact=True).click()
    return wait_status(page, "stopped", "completed", "failed")


def resume_run(page: Any) -> str:
    """Click Resume; returns the status once the run is back in the queue or on a device."""
    button = page.get_by_role("button", name="Resume", exact=True)
    expect(button).to_be_enabled()
    page.evaluate(_RECORD_STATUSES)
    button.click()
    expect(page.locator("#flash")).to_contain_text("resumed")
    # the badge follows the run's stream: wait until it says the run is back
    page.wait_for_function(
        "() => window.__statuses.some(s => s === 'queued' || s === 'running')",
        timeout=TRAINING_MS,
    )
    status: str = page.evaluate(_STATUS)
    return status


def wait_complete(page: Any) -> int:
    """Wait until the selected run has completed; returns the epochs its chart shows."""
    wait_status(page, "completed")
    return points(page)


def compare_runs(page: Any, run_ids: list[str]) -> None:
    """Tick ``run_ids`` in the runs list and compare them; waits for the overlay and table."""
    for run_id in run_ids:
        page.locator(f"#pick-{run_id}").check()
    page.get_by_role("button", name=f"Compare {len(run_ids)} runs").click()
    expect(page.locator("#chart-compare")).to_have_attribute("data-runs", str(len(run_ids)))
    expect(page.locator("#compare-table table")).to_have_attribute("data-runs", str(len(run_ids)))

"""Journey steps on the training page's experiments tab, done as a person does them: open the
tab, fill the search's form, start it, and wait for what the page shows (the trials table, the
search's status badge, the charts' data- attributes)."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

#: The longest a step waits for a search on a loaded machine, in milliseconds.
SEARCH_MS = 180_000
#: Records every count of trials the table shows from now on (window.__trials), with the
#: search's status at that moment, however briefly shown.
RECORD_TRIALS = """() => {
  const table = document.getElementById('trials-table');
  const status = document.getElementById('experiment-status');
  window.__trials = [];
  new MutationObserver(() => window.__trials.push(
      [Number(table.getAttribute('data-trials') || 0), status.getAttribute('data-status')]))
    .observe(table, {attributes: true, attributeFilter: ['data-trials']});
}"""


def experiments_url(base_url: str, project_id: str) -> str:
    return f"{base_url}/projects/{project_id}/training/experiments"


def fill_search(page: Any, split_id: str, name: str, **fields: str) -> None:
    """Type the search's name and ``fields`` (input id without ``x-`` → text) into the form."""
    form = page.locator("#experiment-form")
    expect(form.locator(f"#x-split_id option[value='{split_id}']")).to_have_count(1)
    form.get_by_label("Split").select_option(split_id)
    form.get_by_label("Name").fill(name)
    for key, value in fields.items():
        field = form.locator(f"#x-{key}")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def choose_objectives(page: Any, **directions: str) -> None:
    """Set each metric's select (``maximize``, ``minimize``, or ``""`` for none)."""
    for metric, direction in directions.items():
        page.locator(f"#obj-{metric}").select_option(direction)


def start_search(page: Any) -> str:
    """Click Start search; returns the new search's id once the page shows it selected."""
    with page.expect_response(_is_create) as answer:
        page.get_by_role("button", name="Start search").click()
    assert answer.value.status == 202, answer.value.text()
    data = answer.value.json()["data"]
    experiment_id: str = data.get("id") or data["experiment_id"]
    page.wait_for_function(
        "id => new URL(location.href).searchParams.get('experiment') === id", arg=experiment_id
    )
    expect(page.locator("#experiment-panel")).to_be_visible()
    return experiment_id


def _is_create(response: Any) -> bool:
    return bool(response.request.method == "POST" and response.url.endswith("/api/v1/experiments"))


def wait_search(page: Any, *statuses: str) -> str:
    """Wait until the search's badge shows one of ``statuses``; returns it."""
    page.wait_for_function(
        "wanted => wanted.includes("
        "document.getElementById('experiment-status').getAttribute('data-status'))",
        arg=list(statuses),
        timeout=SEARCH_MS,
    )
    status: str = page.locator("#experiment-status").get_attribute("data-status") or ""
    return status


def trial_states(page: Any) -> list[str]:
    """Each row's trial state, in the table's order."""
    states: list[str] = page.locator("#trials-body tr[data-trial]").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-state'))"
    )
    return states

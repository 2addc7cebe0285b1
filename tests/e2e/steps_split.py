"""Journey steps of the split page, done with the keyboard and mouse as a person would."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Expect

#: Playwright's expectations give up after 5 s, too soon for the studio's answers on a loaded
#: two-core machine: these steps (and their tests) wait up to 20 s, without touching the
#: expectations of other modules.
WAIT_MS = 20_000
expect = Expect()
expect.set_options(timeout=WAIT_MS)


def open_split_page(page: Any, base_url: str, project_id: str) -> None:
    """Go to the project's split page (unless there already) and wait for its list."""
    url = f"{base_url}/projects/{project_id}/split"
    if page.url != url:
        page.goto(url)
    expect(page.locator("#split-list")).not_to_contain_text("Loading")


def fill_split_form(
    page: Any,
    *,
    train: float,
    val: float,
    test: float,
    name: str = "split-1",
    strategy: str = "stratified",
    seed: int = 0,
) -> None:
    form = page.locator("#split-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Strategy").select_option(strategy)
    form.get_by_label("Seed").fill(str(seed))
    for subset, value in (("Train", train), ("Val", val), ("Test", test)):
        form.get_by_label(subset, exact=True).fill(str(value))


def make_split(
    page: Any,
    base_url: str,
    project_id: str,
    train: float = 0.7,
    val: float = 0.15,
    test: float = 0.15,
    name: str = "split-1",
    strategy: str = "stratified",
    seed: int = 0,
) -> str:
    """Make a split with the form and wait until its counts are shown; returns its id."""
    open_split_page(page, base_url, project_id)
    fill_split_form(page, train=train, val=val, test=test, name=name, strategy=strategy, seed=seed)
    page.get_by_role("button", name="Make the split").click()
    made = page.locator("#split-made")
    expect(made).to_contain_text(name)
    split_id: str = made.get_attribute("data-split-id")
    shown = page.locator(f'#split-shown[data-split-id="{split_id}"]')
    expect(shown).to_be_visible()
    expect(page.locator(f'#split-table tr[data-split-id="{split_id}"]')).to_be_visible()
    page.wait_for_function("() => window.Chart && Chart.getChart('split-chart')")
    return split_id

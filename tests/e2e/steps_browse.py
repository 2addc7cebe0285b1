"""Journey steps of the dataset page's browsing half, done as a person would: look at the
thumbnails (scrolling for more), filter them, relabel or delete an image through its dialog.

Each step waits until its visible result is on the page.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

#: How long a step waits for the studio's answer to show (a loaded machine is slow).
WAIT_MS = 20_000
#: A thumbnail of the grid; ``data-filename``, ``data-label`` and ``data-image-id`` on each.
THUMB = "#thumbs li.thumb"
#: True when every thumbnail of the grid has loaded as a picture (none broken).
ALL_LOADED = """() => {
  const imgs = Array.from(document.querySelectorAll('#thumbs li.thumb img'));
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""
#: Scroll the grid's end (its "loading more" sentinel) into view, as a person scrolling down.
SCROLL_TO_END = """() => {
  const more = document.querySelector('#thumbs li.more');
  if (more) { more.scrollIntoView({block: 'end'}); }
}"""
#: True when the grid holds more thumbnails than ``n``, or has nothing more to load.
GREW = """n => document.querySelectorAll('#thumbs li.thumb').length > n
  || !document.querySelector('#thumbs li.more')"""


def open_browse(page: Any, base_url: str, project_id: str, **query: str | int) -> None:
    """The project's dataset page with ``query`` (``label``, ``split_id``, ``subset``,
    ``limit``: images per page) and its first thumbnails, or its word that there are none."""
    params = "&".join(f"{k}={v}" for k, v in query.items())
    page.goto(f"{base_url}/projects/{project_id}/dataset" + (f"?{params}" if params else ""))
    expect(page.locator("#browse-total")).to_have_text(re.compile(r"\d+ images?"), timeout=WAIT_MS)


def shown_total(page: Any) -> int:
    """How many images the grid says match."""
    return int(page.locator("#browse-total").get_attribute("data-total") or 0)


def see_thumbnails(page: Any, at_least: int) -> int:
    """Wait until the grid shows at least ``at_least`` thumbnails, every one of them loaded
    (none broken); scrolls down for more pages as a person would. Returns how many are shown."""
    thumbs = page.locator(THUMB)
    more = page.locator("#thumbs li.more")
    while thumbs.count() < at_least and more.count():
        before = thumbs.count()
        page.evaluate(SCROLL_TO_END)  # the sentinel may be swapped meanwhile: no handle kept
        page.wait_for_function(GREW, arg=before)
    expect(thumbs.nth(at_least - 1)).to_be_attached(timeout=WAIT_MS)
    page.wait_for_function(ALL_LOADED)
    return int(thumbs.count())


def see_all_thumbnails(page: Any) -> int:
    """Scroll until the grid holds every image it says match; returns how many."""
    total = shown_total(page)
    count = see_thumbnails(page, total) if total else 0
    expect(page.locator("#thumbs li.more")).to_have_count(0, timeout=WAIT_MS)
    return count


def thumb(page: Any, file_name: str) -> Any:
    return page.locator(THUMB).filter(has=page.get_by_text(file_name, exact=True))


def filters(page: Any) -> Any:
    """The grid's filters (label, split, subset)."""
    return page.get_by_role("form", name="Filter the images")


def filter_by_label(page: Any, label: str) -> None:
    """Choose ``label`` ("" for all) in the grid's label filter; waits for the new grid."""
    filters(page).get_by_label("Label", exact=True).select_option(label)
    expect(page.locator(f'#browse-total[data-label="{label}"]')).to_be_attached(timeout=WAIT_MS)
    if label:
        expect(page.locator(f'{THUMB}:not([data-label="{label}"])')).to_have_count(
            0, timeout=WAIT_MS
        )


def histogram(page: Any) -> dict[str, int]:
    """The class histogram as the page shows it, once drawn: label → count."""
    # It loads beside the grid: the grid's total showing says nothing of the histogram.
    expect(
        page.locator("#histogram-table, #histogram p.muted:not(:has-text('Counting'))").first
    ).to_be_attached(timeout=WAIT_MS)
    rows = page.locator("#histogram-table tbody tr")
    return {
        row.locator("th").inner_text().strip(): int(
            row.locator("td").first.inner_text().replace(",", "")
        )
        for row in rows.all()
    }


def open_image_dialog(page: Any, file_name: str) -> Any:
    """Open the edit dialog of ``file_name``'s thumbnail (scrolling for it if need be)."""
    button = page.get_by_role("button", name=f"Edit {file_name}", exact=True)
    while not button.count() and page.locator("#thumbs li.more").count():
        see_thumbnails(page, page.locator(THUMB).count() + 1)
    button.click()
    dialog = page.get_by_role("dialog", name="Edit image")
    expect(dialog).to_be_visible(timeout=WAIT_MS)
    return dialog


def relabel(page: Any, file_name: str, label: str) -> None:
    """Give ``file_name`` the label ``label`` through its dialog; waits until the grid shows it."""
    dialog = open_image_dialog(page, file_name)
    dialog.get_by_label("Label").fill(label)
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)
    shown = thumb(page, file_name)
    if shown.count():
        expect(shown.locator(".thumb-label")).to_have_text(label, timeout=WAIT_MS)


def delete_image(page: Any, file_name: str) -> None:
    """Delete ``file_name`` through its dialog (confirming in it); waits until it has left the
    grid."""
    dialog = open_image_dialog(page, file_name)
    dialog.get_by_role("button", name="Delete image…").click()
    dialog.get_by_role("button", name="Delete for good").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)
    expect(thumb(page, file_name)).to_have_count(0, timeout=WAIT_MS)

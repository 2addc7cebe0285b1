"""Journey steps on the projects page, done with the mouse and keyboard as a person would, each
waiting until its visible result is there."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

PROJECT_LINK = re.compile(r"/projects/([0-9A-Za-z_-]+)/dataset$")


def create_project(page: Any, base_url: str, name: str, description: str = "") -> str:
    """Create a project through the form on ``/projects``; its id, read from the link of its
    row once the list shows it."""
    if not page.url.startswith(f"{base_url}/projects") or "/projects/" in page.url:
        page.goto(f"{base_url}/projects")
    form = page.locator("#create-project")
    form.get_by_label("Name").fill(name)
    if description:
        form.get_by_label("Description").fill(description)
    form.get_by_role("button", name="Create project").click()
    expect(page.locator("#created")).to_contain_text(name)
    link = row_of(page, name).get_by_role("link", name=name, exact=True)
    expect(link).to_be_visible()
    href = link.get_attribute("href") or ""
    found = PROJECT_LINK.search(href)
    assert found, f"the row of {name} links to {href!r}"
    return found.group(1)


def row_of(page: Any, name: str) -> Any:
    """The list's row of the project named ``name``."""
    return page.locator("#projects-list tr[data-project-id]").filter(
        has=page.get_by_role("link", name=name, exact=True)
    )


def open_project(page: Any, base_url: str, project_id: str) -> None:
    """Open a project from the projects list (its dataset page), as a person clicks it."""
    if not re.match(rf"{re.escape(base_url)}/projects(\?.*)?$", page.url):
        page.goto(f"{base_url}/projects?status=all")
    expect(page.locator("#projects-list .project-list")).to_be_attached()
    link = page.locator(f"#project-{project_id} a[href='/projects/{project_id}/dataset']")
    if link.count():
        link.click()
    else:  # not on this page of the list: where its link leads
        page.goto(f"{base_url}/projects/{project_id}/dataset")
    page.wait_for_url(f"{base_url}/projects/{project_id}/dataset")
    expect(page.locator("#project")).to_have_attribute("data-project-id", project_id)

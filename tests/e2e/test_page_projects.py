"""The projects page in a real Chromium: create through the form (and a bad name told next to its
field), search, paging, inline rename, archive and restore behind a keyboard-usable confirmation;
and the same API routes answering htmx with fragments of their own JSON."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot, sign_in
from tests.e2e.steps_projects import create_project, open_project, row_of
from tests.stack import ADMIN, ADMIN_PASSWORD, API, Stack

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects")
HX = {"HX-Request": "true"}
#: Chrome's console line for an answer the test provokes.
REFUSED = (
    r"(Failed to load resource: the server responded with a status of"
    r"|Response Status Error Code) (409|422)"
)
#: The list's count reads "1\N{EN DASH}2 of 5 projects".
DASH = "\N{EN DASH}"


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


def unique(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:8]}"


def make(studio: Stack, name: str, token: str | None = None) -> dict:
    with studio.sync_client(token) as api:
        resp = api.post(f"{API}/projects", json={"name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


# --- fragments, without a browser ----------------------------------------------------------


def test_the_list_route_answers_html_to_htmx_and_json_to_scripts(studio):
    name = unique("fragment")
    project = make(studio, name)
    with studio.sync_client() as api:
        html = api.get(f"{API}/projects", params={"q": name}, headers=HX)
        data = api.get(f"{API}/projects", params={"q": name}).json()["data"]
    assert html.headers["content-type"].startswith("text/html")
    assert f'href="/projects/{project["id"]}/dataset"' in html.text and name in html.text
    assert data["items"][0]["id"] == project["id"] and data["items"][0]["role"] == "admin"


def test_a_rename_at_an_old_version_is_refused_as_a_fragment_saying_so(studio):
    project = make(studio, unique("versioned"))
    stale = {"If-Match": f'"{project["version"]}"'}
    path = f"{API}/projects/{project['id']}"
    with studio.sync_client() as api:
        first = api.patch(path, json={"name": unique("first")}, headers=HX | stale)
        second = api.patch(path, json={"name": unique("second")}, headers=HX | stale)
    assert first.status_code == 200 and f'"If-Match": "\\"{project["version"] + 1}\\""' in (
        first.text.replace("&#34;", '"')
    )
    assert second.status_code == 409, second.text
    assert second.headers["hx-reswap"] == "none" and 'id="flash"' in second.text


def test_a_refused_create_answers_htmx_with_each_field_s_problem_by_its_id(studio):
    body = {"name": unique("detector"), "task_type": "segmentation"}
    with studio.sync_client() as api:
        refused = api.post(f"{API}/projects", json=body, headers=HX)
        listed = api.get(f"{API}/projects", params={"q": body["name"]}).json()["data"]
    assert refused.status_code == 422 and refused.headers["hx-reswap"] == "none"
    assert 'id="error-task_type"' in refused.text
    assert listed["total"] == 0


def test_a_viewer_is_offered_no_change_and_an_owner_no_more_than_owners_may(studio):
    owner, viewer = unique("owner"), unique("viewer")
    studio.create_user(owner, "owner-password-1")
    studio.create_user(viewer, "viewer-password-1")
    owner_token = studio.sign_in(owner, "owner-password-1")
    project = make(studio, unique("shared"), owner_token)
    with studio.sync_client(owner_token) as api:
        added = api.post(
            f"{API}/projects/{project['id']}/members", json={"user_id": viewer, "role": "viewer"}
        )
        assert added.status_code == 201, added.text
        mine = api.get(f"{API}/projects", params={"q": project["name"]}, headers=HX).text
    assert project["role"] == "owner"
    assert 'data-action="rename"' in mine and "/archive" in mine
    with studio.sync_client(studio.sign_in(viewer, "viewer-password-1")) as api:
        theirs = api.get(f"{API}/projects", params={"q": project["name"]}, headers=HX).text
        as_json = api.get(f"{API}/projects", params={"q": project["name"]}).json()["data"]
    assert as_json["items"][0]["role"] == "viewer"
    assert project["name"] in theirs and "data-action" not in theirs and "/archive" not in theirs


# --- in the browser ------------------------------------------------------------------------


def test_create_and_rename_with_each_refusal_told_where_it_belongs(studio, open_page):
    page, watch = open_page()
    watch.expect(REFUSED)
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    name = unique("Cats and dogs")
    project_id = create_project(page, studio.base_url, name, "pets, two classes")
    row = page.locator(f"#project-{project_id}")
    expect(row).to_have_class(re.compile(r"\bfresh\b"))
    expect(row).to_contain_text("pets, two classes")

    # Rename inline: Escape cancels, a refused name is told by the row's field, Enter saves.
    row.get_by_role("button", name=f"Rename {name}").click()
    field = row.get_by_label("New name")
    expect(field).to_be_focused()
    field.fill("   ")
    field.press("Enter")
    expect(row.locator(".rename .field-error")).to_have_text("name must not be empty")
    expect(page.locator("#error-name")).to_be_empty()  # not the new-project form's field
    field.press("Escape")
    expect(field).to_be_hidden()
    expect(row.get_by_role("link", name=name, exact=True)).to_be_visible()
    row.get_by_role("button", name=f"Rename {name}").click()
    expect(row.locator(".rename .field-error")).to_be_empty()
    renamed = unique("Pets")
    field.fill(renamed)
    field.press("Enter")
    expect(row.get_by_role("link", name=renamed, exact=True)).to_be_visible()
    expect(row.get_by_role("button", name=f"Rename {renamed}")).to_be_focused()

    # A rename made meanwhile elsewhere is not overwritten: the row shows it instead.
    row.get_by_role("button", name=f"Rename {renamed}").click()
    elsewhere = unique("Renamed elsewhere")
    with studio.sync_client() as api:
        assert api.patch(f"{API}/projects/{project_id}", json={"name": elsewhere}).is_success
    field.fill(unique("mine"))
    field.press("Enter")
    expect(page.locator("#flash")).to_contain_text("The list now shows the project as it is")
    expect(row.get_by_role("link", name=elsewhere, exact=True)).to_be_visible()

    # A bad new name is told next to its field, and nothing is created.
    page.get_by_label("Name", exact=True).fill("   ")
    page.get_by_role("button", name="Create project").click()
    expect(page.locator("#error-name")).to_have_text("name must not be empty")
    expect(page.locator("#flash")).to_contain_text("name must not be empty")


def test_archive_and_restore_behind_a_keyboard_usable_confirmation(studio, open_page):
    page, _ = open_page()
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    name = unique("Birds")
    project_id = create_project(page, studio.base_url, name)
    row = page.locator(f"#project-{project_id}")
    row.get_by_role("button", name=f"Archive {name}").click()
    confirm = row.get_by_role("button", name="Yes, archive")
    expect(confirm).to_be_focused()
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    expect(row.get_by_role("button", name=f"Archive {name}")).to_be_focused()
    page.keyboard.press("Enter")
    expect(confirm).to_be_focused()
    page.keyboard.press("Enter")
    expect(row.locator(".badge")).to_have_text("archived")
    expect(row.get_by_role("button", name=f"Restore {name}")).to_be_focused()
    expect(row.get_by_role("button", name=f"Rename {name}")).to_have_count(0)

    # It is among the archived projects, and no longer among the active ones.
    search = page.locator("#project-search")
    search.get_by_label("Search by name").fill(name)
    expect(page.locator("#projects-list")).to_contain_text("No active project matches")
    search.get_by_label("Status").select_option("archived")
    expect(row_of(page, name).locator(".badge")).to_have_text("archived")
    assert re.search(r"/projects\?q=Birds-\w+&status=archived&limit=20$", page.url)
    screenshot(page, "projects-archived")

    # Restore it, and open it.
    row.get_by_role("button", name=f"Restore {name}").click()
    row.get_by_role("button", name="Yes, restore").click()
    expect(row.locator(".badge")).to_have_text("active")
    open_project(page, studio.base_url, project_id)


def test_paging_through_a_search_keeps_the_place_in_the_address(studio, open_page):
    prefix = unique("paged")
    for n in range(5):
        make(studio, f"{prefix} {n}")
    page, _ = open_page()
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{studio.base_url}/projects?q={prefix}&limit=2")
    listing = page.locator("#projects-list")
    expect(listing.locator("#projects-count")).to_contain_text(f"1{DASH}2 of 5 projects")
    expect(listing.get_by_role("button", name="Previous")).to_be_disabled()
    # Newest first: 4 and 3 on the first page.
    expect(listing.locator("tbody tr")).to_have_count(2)
    expect(listing.locator("tbody tr").first).to_contain_text(f"{prefix} 4")
    listing.get_by_role("button", name="Next").click()
    expect(listing.locator("#projects-count")).to_contain_text(f"3{DASH}4 of 5")
    expect(listing.get_by_role("button", name="Next")).to_be_focused()
    listing.get_by_role("button", name="Next").click()
    expect(listing.locator("#projects-count")).to_contain_text(f"5{DASH}5 of 5")
    expect(listing.get_by_role("button", name="Previous")).to_be_focused()
    assert page.url.endswith("offset=4")
    page.reload()
    expect(listing.locator("tbody tr")).to_have_count(1)
    expect(listing.locator("tbody tr")).to_contain_text(f"{prefix} 0")
    listing.get_by_role("button", name="Previous").click()
    expect(listing.locator("#projects-count")).to_contain_text(f"3{DASH}4 of 5")


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_projects_page_is_accessible_and_fits(studio, open_page, viewport):
    make(studio, unique("shown"))
    page, _ = open_page(viewport=viewport)
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    expect(page.locator("#projects-list tbody tr").first).to_be_visible()
    first = page.locator("#projects-list tbody tr").first
    first.locator("[data-action=confirm]").click()  # the confirmation is checked too
    screenshot(page, "projects")
    assert axe_violations(page) == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_page_without_a_session_is_the_sign_in_page(studio):
    answer = httpx.get(f"{studio.base_url}/projects", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/projects"

"""Signing in and out of the pages, in a real Chromium: the form, the cookie session, the
redirects, and what a stranger to the studio gets."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot, sign_in
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects")


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


def test_home_sends_a_stranger_to_sign_in_and_back_to_the_page_asked_for(studio, open_page):
    page, _ = open_page()
    page.goto(f"{studio.base_url}/")
    assert page.url.endswith("/login")
    page.goto(f"{studio.base_url}/projects?q=cats")
    assert re.search(r"/login\?next=/projects%3Fq%3Dcats$", page.url)
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/projects\?q=cats$"))


def test_a_wrong_password_is_told_in_the_form_and_nothing_else(studio, open_page):
    page, watch = open_page()
    watch.expect(r"status of 401 .* at .*/login$")  # the form's answer is a 401 page
    page.goto(f"{studio.base_url}/login")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.locator("#login-error")
    assert "password" in alert.inner_text().lower()
    assert page.get_by_label("Username").input_value() == ADMIN
    assert page.context.cookies() == []


def test_the_session_is_an_http_only_strict_cookie_and_sign_out_ends_it(studio, open_page):
    page, _ = open_page()
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["studio_access"]["httpOnly"] and cookies["studio_access"]["sameSite"] == "Strict"
    assert cookies["studio_refresh"]["path"] == "/session"
    assert page.evaluate("document.cookie") == ""  # no script can read the tokens
    token = cookies["studio_access"]["value"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    # The token the cookie held no longer works anywhere.
    answer = httpx.get(
        f"{studio.base_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 401


def test_a_cookie_alone_cannot_change_anything_from_another_site(studio, open_page):
    page, _ = open_page()
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    token = {c["name"]: c["value"] for c in page.context.cookies()}["studio_access"]
    cookies = {"studio_access": token}
    body = {"name": "forged"}
    forged = httpx.post(f"{studio.base_url}/api/v1/projects", json=body, cookies=cookies)
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "FORBIDDEN"
    # A GET with the cookie reads, as the pages do.
    assert httpx.get(f"{studio.base_url}/api/v1/projects", cookies=cookies).status_code == 200


def test_an_unknown_page_is_a_page_saying_so(studio, open_page):
    page, watch = open_page()
    watch.expect(r"status of 404 .* at .*/dataset$")  # the page asked for is a 404 page
    sign_in(page, studio.base_url, ADMIN, ADMIN_PASSWORD)
    answer = page.goto(f"{studio.base_url}/projects/0000000000000000000000000000000a/dataset")
    assert answer is not None and answer.status == 404
    assert "does not exist" in page.locator("main").inner_text()


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_sign_in_page_is_accessible(studio, open_page, viewport):
    page, _ = open_page(viewport=viewport)
    page.goto(f"{studio.base_url}/login")
    screenshot(page, "login")
    assert axe_violations(page) == []

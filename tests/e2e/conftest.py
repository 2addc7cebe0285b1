"""Fixtures of the browser tests: one Chromium per session, a fresh context per page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.browser import ARGS, CHROMIUM, WIDE, Watch, unavailable
from tests.stack import Stack


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Stack:
    """The module's studio (its ``STACK_SERVICES``, else all): the shared one of those services
    (``tests/conftest.py``), patient with a slow start."""
    return stack


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Chromium, for one module's tests. Playwright's sync API holds an event loop as running
    until it stops: kept for the session, it would break every asyncio test after the browser
    tests (``Runner.run() cannot be called from a running event loop``)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(ARGS), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Any]:
    """``open_page(viewport=WIDE)`` → (page, watch): a page in a context of its own (its own
    cookies) whose problems fail the test at its end unless expected."""
    opened: list[tuple[Any, Watch]] = []

    def open_(viewport: dict[str, int] = WIDE, **options: Any) -> tuple[Any, Watch]:
        context = chromium.new_context(viewport=viewport, **options)
        context.set_default_timeout(20_000)
        page = context.new_page()
        watch = Watch()
        watch.attach(page)
        opened.append((page, watch))
        return page, watch

    yield open_
    problems = [p for _, w in opened for p in w.unexpected()]
    for page, _ in opened:
        page.context.close()
    assert not problems, "the pages had problems:\n" + "\n".join(problems)

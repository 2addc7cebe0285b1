"""A real headless Chromium driven by Playwright, for the pages' tests.

The browser is the system's (Debian's ``chromium``, installed by ``make test`` where it can be):
Playwright never downloads one. Where none is installed, or Playwright's driver cannot start,
the tests that need it are skipped with the reason. Every page a test opens records what a user
would call broken — a JavaScript console error, an uncaught exception, a failed request, an
answer of 500 or more — and the test fails at its end unless it said it expected that.
Screenshots go to ``tests/e2e/artifacts/`` (git-ignored), or ``STUDIO_E2E_ARTIFACTS``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

CHROMIUM: Final = os.environ.get("STUDIO_CHROMIUM", "/usr/bin/chromium")
#: What Chromium needs on a closed, root-run, screenless machine.
ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
ARTIFACTS: Final = Path(os.environ.get("STUDIO_E2E_ARTIFACTS", Path(__file__).parent / "artifacts"))
AXE: Final = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
#: The widths every page is checked and photographed at: a laptop and a phone.
WIDE: Final = {"width": 1280, "height": 900}
PHONE: Final = {"width": 390, "height": 844}


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (make test installs Debian's chromium where it can)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the dev lock installs it
        return f"playwright is not installed: {exc}"
    return None


@dataclass
class Watch:
    """What went wrong in a page: console errors, uncaught errors, failed requests."""

    problems: list[str] = field(default_factory=list)
    #: Patterns of problems the test provokes on purpose.
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(e.search(p) for e in self.expected)]

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text} at {msg.location.get('url', '')}")

    def _failed(self, request: Any) -> None:
        reason = request.failure or ""
        # A page left while its event streams were open aborts them, and so does a page left
        # before the browser fetched its icon: neither is a failure.
        # An image still loading when its page is left (or its grid redrawn) is dropped too.
        leaving = request.resource_type in ("eventsource", "fetch", "xhr", "image")
        if "ERR_ABORTED" in reason and (leaving or request.url.endswith("/favicon.svg")):
            return
        self.problems.append(f"request failed: {request.method} {request.url} {reason}")

    def _response(self, response: Any) -> None:
        if response.status >= 500:
            method = response.request.method
            self.problems.append(f"answer {response.status}: {method} {response.url}")


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot as ``<name>-<width>.png`` in the artefacts folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    path = ARTIFACTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of ``impacts`` on the page as it is now, one line each.

    The script is evaluated through the DevTools protocol, which the page's Content Security
    Policy does not govern (a ``<script>`` tag would be refused, as it should be)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    lines = []
    for violation in result["violations"]:
        if violation.get("impact") in impacts:
            targets = [", ".join(node["target"]) for node in violation["nodes"][:5]]
            lines.append(f"{violation['impact']} {violation['id']}: {violation['help']} {targets}")
    return lines


def sign_in(page: Any, base_url: str, user: str, password: str) -> None:
    """Sign in through the login form, as a person would."""
    page.goto(f"{base_url}/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/projects.*"))


Opener = Callable[..., tuple[Any, Watch]]
